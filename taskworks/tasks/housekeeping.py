"""The scheduled housekeeping: expired data deleted (every retention rule), the
undeliverable list trimmed, the daily report."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import redis
from sqlalchemy import CursorResult, delete, func, select

from taskworks.broker.urls import redis_client
from taskworks.errors import InvalidInput
from taskworks.logs import get_logger
from taskworks.redaction import error_message
from taskworks.runtime.journal import enforce_retention
from taskworks.settings import Settings
from taskworks.store import retention
from taskworks.store.engine import Store
from taskworks.store.tables import HealthCheck, Report

__all__ = ["cleanup_expired", "daily_report", "trim_undeliverable"]

log = get_logger("taskworks.builtin")


def cleanup_expired(store: Store, settings: Settings, broker_url: str,
                    now: datetime | None = None) -> dict[str, int]:
    """Delete health checks and reports older than ``retention_days``, journal entries
    beyond the journal's retention (age and count), what the ``[retention]`` settings
    expire (taskworks/store/retention.py), and trim the undeliverable list.

    Returns (and logs; the journal records it as the task's result) the rows deleted per
    kind; ``undeliverable`` is -1 when the broker could not be reached."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    with store.session() as session:
        deleted = {
            table.__tablename__: cast(
                CursorResult[Any], session.execute(delete(table).where(column < cutoff))
            ).rowcount
            for table, column in ((HealthCheck, HealthCheck.checked_at),
                                  (Report, Report.created_at))
        }
    deleted.update(enforce_retention(store, settings.journal, now))
    deleted.update(retention.delete_expired(store, settings.retention, now))
    deleted["undeliverable"] = trim_undeliverable(broker_url,
                                                  settings.retention.undeliverable_max)
    log.info("cleanup", cutoff=cutoff.isoformat(), **deleted)
    return deleted


def trim_undeliverable(broker_url: str, keep: int) -> int:
    """Trim the undeliverable list to its newest ``keep``; -1 when the broker is away."""
    client = redis_client(broker_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return retention.trim_undeliverable(client, keep)
    except redis.RedisError as exc:  # the store's cleanup is done: report, do not fail it
        log.warning("cleanup could not trim the undeliverable list", error=error_message(exc))
        return -1
    finally:
        client.close()


def daily_report(store: Store, day: str | None = None) -> dict[str, Any]:
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
    with store.session() as session:
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
