"""Built-in periodic tasks: health check, cleanup of expired data, the daily report.

Each does real work against the broker and the store and records what it found.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import CursorResult, delete, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from taskworks.broker.urls import redis_client
from taskworks.errors import InvalidInput
from taskworks.logs import get_logger
from taskworks.notify import task as notify_task
from taskworks.redaction import error_message
from taskworks.runtime.journal import enforce_retention
from taskworks.store import retention
from taskworks.store.tables import HealthCheck, Report
from taskworks.tasks import db_operation, http_call

if TYPE_CHECKING:
    from taskworks.app import Taskworks

log = get_logger("taskworks.builtin")

HEALTH_CHECK = "taskworks.monitoring.health_check"
CLEANUP = "taskworks.cleanup.expired_data"
DAILY_REPORT = "taskworks.reports.daily"
WHERE = "taskworks.diagnostics.where"


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


def probe_database(tw: Taskworks) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with tw.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
    except SQLAlchemyError as exc:
        return {"ok": False, "error": error_message(exc).splitlines()[0]}


def probe_workers(tw: Taskworks, timeout: float = 1.0) -> list[str]:
    """Hostnames of the workers that answer a broadcast ping (Celery remote control).

    On a connection of its own: a pooled one may be dead since the broker restarted
    (kombu's broadcast does not reconnect), and the probe must report what is, not fail."""
    with tw.app.connection_for_write() as connection:
        replies = tw.app.control.ping(timeout=timeout, connection=connection) or []
    return sorted(name for reply in replies for name in reply)


def health_check(tw: Taskworks, *, worker_timeout: float = 1.0) -> dict[str, Any]:
    broker = probe_broker(tw.app.conf.broker_url)
    database = probe_database(tw)
    workers = probe_workers(tw, worker_timeout) if broker["ok"] else []
    healthy = bool(broker["ok"] and database["ok"])
    details = {"broker": broker, "database": database, "workers": workers}
    if database["ok"]:
        with tw.store.session() as session:
            session.add(HealthCheck(
                healthy=healthy, broker_ok=broker["ok"], database_ok=database["ok"],
                workers=len(workers), details=details,
            ))
    log.info("health check", healthy=healthy, workers=len(workers))
    return {"healthy": healthy, **details}


def cleanup_expired(tw: Taskworks, now: datetime | None = None) -> dict[str, int]:
    """Delete health checks and reports older than ``retention_days``, journal entries
    beyond the journal's retention (age and count), what the ``[retention]`` settings
    expire (taskworks/store/retention.py), and trim the undeliverable list.

    Returns (and logs; the journal records it as the task's result) the rows deleted per
    kind; ``undeliverable`` is -1 when the broker could not be reached."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=tw.settings.retention_days)
    with tw.store.session() as session:
        deleted = {
            table.__tablename__: cast(
                CursorResult[Any], session.execute(delete(table).where(column < cutoff))
            ).rowcount
            for table, column in ((HealthCheck, HealthCheck.checked_at),
                                  (Report, Report.created_at))
        }
    deleted.update(enforce_retention(tw.store, tw.settings.journal, now))
    deleted.update(retention.delete_expired(tw.store, tw.settings.retention, now))
    deleted["undeliverable"] = trim_undeliverable(tw)
    log.info("cleanup", cutoff=cutoff.isoformat(), **deleted)
    return deleted


def trim_undeliverable(tw: Taskworks) -> int:
    client = redis_client(tw.app.conf.broker_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return retention.trim_undeliverable(client, tw.settings.retention.undeliverable_max)
    except redis.RedisError as exc:  # the store's cleanup is done: report, do not fail it
        log.warning("cleanup could not trim the undeliverable list", error=error_message(exc))
        return -1
    finally:
        client.close()


def daily_report(tw: Taskworks, day: str | None = None) -> dict[str, Any]:
    """Summarise one UTC day (default: yesterday) and store the report."""
    if day is None:
        first = datetime.now(UTC).date() - timedelta(days=1)
    else:
        try:
            first = date.fromisoformat(day)
        except (TypeError, ValueError):
            raise InvalidInput("day", day, "a date as YYYY-MM-DD") from None
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    end = start + timedelta(days=1)
    in_day = (HealthCheck.checked_at >= start) & (HealthCheck.checked_at < end)
    with tw.store.session() as session:
        total = session.scalar(select(func.count()).where(in_day)) or 0
        healthy = session.scalar(
            select(func.count()).where(in_day & HealthCheck.healthy.is_(True))
        ) or 0
        body = {
            "day": start.date().isoformat(),
            "health_checks": total,
            "healthy": healthy,
            "unhealthy": total - healthy,
            "availability": round(healthy / total, 4) if total else None,
        }
        session.add(Report(kind="daily", period_start=start, period_end=end, body=body))
    log.info("daily report", **body)
    return body


def register(tw: Taskworks) -> None:
    """Declare the built-in tasks on ``tw``'s app."""
    notify_task.register(tw)
    http_call.register(tw)
    db_operation.register(tw)

    def queue(preferred: str) -> str:
        # a topology without the patterns guide's queues still gets working built-ins
        return preferred if preferred in tw.settings.queues else tw.settings.default_queue

    @tw.task(name=HEALTH_CHECK, queue=queue("priority"), priority=9,
             soft_time_limit=30, time_limit=60)
    def _health_check() -> dict[str, Any]:
        return health_check(tw)

    @tw.task(name=CLEANUP, queue=queue("scheduled"))
    def _cleanup() -> dict[str, int]:
        return cleanup_expired(tw)

    @tw.task(name=DAILY_REPORT, queue=queue("scheduled"))
    def _daily_report(day: str | None = None) -> dict[str, Any]:
        return daily_report(tw, day)

    @tw.task(name=WHERE, bind=True)
    def _where(self: Any, label: str = "") -> dict[str, Any]:
        """Report where this task ran: used by the demo and by diagnostics."""
        info = self.request.delivery_info or {}
        return {
            "label": label, "queue": info.get("routing_key"), "hostname": self.request.hostname,
            "host": socket.gethostname(), "pid": os.getpid(),
        }

    from taskworks.workflows import tasks as workflow_tasks  # the step wrapper and the sweep

    workflow_tasks.register(tw)
