"""The health check: broker, store and workers probed for real, the result recorded."""

from __future__ import annotations

import time
from typing import Any

import redis
from celery import Celery
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from taskworks.broker.urls import redis_client
from taskworks.logs import get_logger
from taskworks.redaction import error_message
from taskworks.store.engine import Store
from taskworks.store.tables import HealthCheck

__all__ = ["health_check", "probe_broker", "probe_database", "probe_workers"]

log = get_logger("taskworks.builtin")


def probe_broker(url: str) -> dict[str, Any]:
    client = redis_client(url, socket_timeout=2, socket_connect_timeout=2,
                          retry=Retry(NoBackoff(), 0))
    started = time.perf_counter()
    try:
        client.ping()
        return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
    except redis.RedisError as exc:
        return {"ok": False, "error": error_message(exc)}  # doctor prints it, health rows keep it
    finally:
        client.close()


def probe_database(store: Store) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
    except SQLAlchemyError as exc:
        return {"ok": False, "error": error_message(exc).splitlines()[0]}


def probe_workers(app: Celery, timeout: float = 1.0) -> list[str]:
    """Hostnames of the workers that answer a broadcast ping (Celery remote control).

    On a connection of its own: a pooled one may be dead since the broker restarted
    (kombu's broadcast does not reconnect), and the probe must report what is, not fail."""
    with app.connection_for_write() as connection:
        replies = app.control.ping(timeout=timeout, connection=connection) or []
    return sorted(name for reply in replies for name in reply)


def health_check(app: Celery, store: Store, *, worker_timeout: float = 1.0) -> dict[str, Any]:
    """Probe the broker, the store and the workers; record the result in the store (when
    it answers)."""
    broker = probe_broker(app.conf.broker_url)
    database = probe_database(store)
    workers = probe_workers(app, worker_timeout) if broker["ok"] else []
    healthy = bool(broker["ok"] and database["ok"])
    details = {"broker": broker, "database": database, "workers": workers}
    if database["ok"]:
        with store.session() as session:
            session.add(HealthCheck(
                healthy=healthy, broker_ok=broker["ok"], database_ok=database["ok"],
                workers=len(workers), details=details,
            ))
    log.info("health check", healthy=healthy, workers=len(workers))
    return {"healthy": healthy, **details}
