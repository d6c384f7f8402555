"""The built-in periodic functions against SQLite and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from taskworks import InvalidInput, Taskworks, keys, load_settings
from taskworks.store.migrate import upgrade
from taskworks.store.tables import HealthCheck, Notification, Report
from taskworks.tasks.health import health_check
from taskworks.tasks.housekeeping import cleanup_expired, daily_report


@pytest.fixture
def tw(database_url: str) -> Iterator[Taskworks]:
    tw = Taskworks(settings=load_settings(database_url=database_url))
    upgrade(tw.store)
    yield tw
    tw.store.dispose()


def _check(at: datetime, healthy: bool = True) -> HealthCheck:
    return HealthCheck(checked_at=at, healthy=healthy, broker_ok=True, database_ok=True,
                       workers=0, details={})


def _report(at: datetime) -> Report:
    return Report(kind="daily", period_start=at, period_end=at, created_at=at, body={})


def _count(tw: Taskworks, table: type[HealthCheck] | type[Report]) -> int:
    with tw.store.session() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_health_check_records_a_row(tw: Taskworks) -> None:
    result = health_check(tw.app, tw.store, worker_timeout=0.2)
    assert result["healthy"] is True
    assert result["broker"]["ok"] is True
    assert result["database"]["ok"] is True
    with tw.store.session() as session:
        rows = session.scalars(select(HealthCheck)).all()
    assert len(rows) == 1
    row = rows[0]
    assert (row.healthy, row.broker_ok, row.database_ok) == (True, True, True)
    assert row.workers == len(result["workers"])
    assert row.details["database"]["ok"] is True


def test_cleanup_deletes_only_expired_rows(tw: Taskworks) -> None:
    now = datetime.now(UTC)
    assert tw.settings.retention_days == 14
    old, recent = now - timedelta(days=15), now - timedelta(days=13)
    with tw.store.session() as session:
        session.add_all([_check(old), _check(old), _check(recent), _report(old), _report(recent)])
    nothing_else = {"journal_by_age": 0, "journal_by_count": 0, "dead_letters": 0,
                    "replayed_dead_letters": 0, "notifications": 0, "scaling_decisions": 0,
                    "mapreduce_jobs": 0, "workflow_runs": 0, "workflow_definitions": 0,
                    "undeliverable": 0}
    assert cleanup(tw) == {"health_checks": 2, "reports": 1, **nothing_else}
    assert (_count(tw, HealthCheck), _count(tw, Report)) == (1, 1)
    assert cleanup(tw) == {"health_checks": 0, "reports": 0, **nothing_else}


def test_cleanup_applies_the_retention_settings(tw: Taskworks, redis_client: Any) -> None:
    """The hourly task runs every rule of taskworks/store/retention.py (tested there)."""
    now = datetime.now(UTC)
    with tw.store.session() as session:
        session.add_all([Notification(created_at=now - timedelta(days=d), channel="email",
                                      task_name="t", severity="high", subject="s",
                                      status="sent") for d in (31, 29)])
    redis_client.rpush(keys.UNDELIVERABLE, *range(10_005))
    deleted = cleanup(tw)
    assert (deleted["notifications"], deleted["undeliverable"]) == (1, 5)
    assert redis_client.llen(keys.UNDELIVERABLE) == 10_000


def test_daily_report_counts_only_that_day(tw: Taskworks) -> None:
    def at(stamp: str) -> datetime:
        return datetime.fromisoformat(stamp).replace(tzinfo=UTC)

    with tw.store.session() as session:
        session.add_all([
            _check(at("2026-01-04T23:59"), healthy=True),
            _check(at("2026-01-05T00:00"), healthy=True),
            _check(at("2026-01-05T12:00"), healthy=False),
            _check(at("2026-01-06T00:00"), healthy=True),
        ])
    body = daily_report(tw.store, day="2026-01-05")
    assert body == {"day": "2026-01-05", "health_checks": 2, "healthy": 1, "unhealthy": 1,
                    "availability": 0.5}
    with tw.store.session() as session:
        reports = session.scalars(select(Report)).all()
    assert len(reports) == 1
    assert reports[0].kind == "daily"
    assert reports[0].body == body
    # SQLite hands back naive UTC, PostgreSQL aware datetimes
    period = [d if d.tzinfo else d.replace(tzinfo=UTC)
              for d in (reports[0].period_start, reports[0].period_end)]
    assert period == [at("2026-01-05T00:00"), at("2026-01-06T00:00")]


@pytest.mark.parametrize("day", ["2026-01-05T10:00+02:00", "yesterday", "2026-13-01"])
def test_daily_report_refuses_anything_but_a_date(day: str) -> None:
    with pytest.raises(InvalidInput, match="day"):
        daily_report(None, day)  # type: ignore[arg-type]  # refused before any store access


def cleanup(tw: Any) -> dict[str, int]:
    return cleanup_expired(tw.store, tw.settings, tw.app.conf.broker_url)
