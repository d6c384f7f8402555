"""deliver() end to end: real Valkey, real SMTP and HTTP servers, a real SQLite store."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from taskworks import InvalidInput, Taskworks, load_settings
from taskworks.notify.notice import FailureNotice
from taskworks.notify.service import deliver, should_notify
from taskworks.notify.task import NOTIFY_TASK
from taskworks.runtime.severity import Severity
from taskworks.store.migrate import upgrade
from taskworks.store.tables import Notification
from tests.notify import HttpSink, SmtpSink, http_server, smtp_server
from tests.support.keys import written_keys
from tests.support.postgres import free_port

NOTICE = FailureNotice(
    task_name="tasks.io_intensive.fetch", task_id="t-1", exc_type="ConnectionError",
    exc_message="upstream down", severity="critical", hostname="w1@box", attempt=2,
)

MakeTw = Callable[..., Taskworks]


@pytest.fixture
def make_tw(tmp_path: Path, redis_client: redis.Redis) -> Iterator[MakeTw]:
    """A Taskworks on a fresh SQLite store and a flushed Valkey, with this ``notify``."""
    made: list[Taskworks] = []

    def make(broker_url: str | None = None, **notify: Any) -> Taskworks:
        overrides: dict[str, Any] = {"broker_url": broker_url} if broker_url else {}
        tw = Taskworks(settings=load_settings(
            database_url=f"sqlite:///{tmp_path}/n{len(made)}.db", notify=notify, **overrides))
        upgrade(tw.store)
        made.append(tw)
        return tw

    yield make
    for tw in made:
        tw.store.dispose()


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    with smtp_server(sink) as port:
        yield sink, port


@pytest.fixture
def hook() -> Iterator[HttpSink]:
    with http_server(HttpSink()) as sink:
        yield sink


def both(smtp: tuple[SmtpSink, int], hook: HttpSink, **notify: Any) -> dict[str, Any]:
    return {
        "email": {"host": "127.0.0.1", "port": smtp[1], "recipients": ["ops@example.org"],
                  "timeout": 5},
        "webhook": {"url": hook.url, "timeout": 5, "headers": {"X-Token": "tok-xyz"}},
        **notify,
    }


def send(tw: Taskworks, notice: FailureNotice) -> list[str]:
    """deliver() with what the notification task gives it: tw's settings and store."""
    return deliver(notice, tw.settings.notify, tw.settings.effective_broker_url, tw.store)


def rows(tw: Taskworks) -> list[Notification]:
    with tw.store.session() as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


def test_one_notice_one_email_one_post_two_rows(
        make_tw: MakeTw, smtp: tuple[SmtpSink, int], hook: HttpSink) -> None:
    tw = make_tw(**both(smtp, hook))
    assert send(tw, NOTICE) == ["sent", "sent"]
    assert [m["Subject"] for m in smtp[0].messages] == [NOTICE.subject()]
    assert [FailureNotice.from_json(b) for b in hook.bodies] == [NOTICE]
    recorded = rows(tw)
    assert [(r.channel, r.status, r.error) for r in recorded] == [
        ("email", "sent", None), ("webhook", "sent", None)]
    for row in recorded:
        assert (row.task_name, row.exc_type, row.severity, row.occurrences, row.subject) == (
            NOTICE.task_name, NOTICE.exc_type, "critical", 1, NOTICE.subject())


def test_a_failing_webhook_does_not_stop_the_email(
        make_tw: MakeTw, smtp: tuple[SmtpSink, int], hook: HttpSink) -> None:
    hook.status = 500
    tw = make_tw(**both(smtp, hook))
    assert send(tw, NOTICE) == ["sent", "failed"]
    assert len(smtp[0].messages) == 1
    assert len(hook.bodies) == 1
    email_row, webhook_row = rows(tw)
    assert (email_row.status, webhook_row.status) == ("sent", "failed")
    assert webhook_row.error is not None
    assert "HTTP 500" in webhook_row.error
    assert "tok-xyz" not in webhook_row.error


def test_a_failing_email_does_not_stop_the_webhook(
        make_tw: MakeTw, hook: HttpSink) -> None:
    tw = make_tw(**both((SmtpSink(), free_port()), hook))  # nobody listens there
    assert send(tw, NOTICE) == ["failed", "sent"]
    assert len(hook.bodies) == 1
    email_row, webhook_row = rows(tw)
    assert (email_row.status, webhook_row.status) == ("failed", "sent")
    assert email_row.error is not None
    assert "127.0.0.1" in email_row.error


def test_a_duplicate_in_the_window_sends_and_records_nothing(
        make_tw: MakeTw, smtp: tuple[SmtpSink, int], hook: HttpSink) -> None:
    tw = make_tw(**both(smtp, hook))
    assert send(tw, NOTICE) == ["sent", "sent"]
    assert send(tw, NOTICE) == []
    assert (len(smtp[0].messages), len(hook.bodies), len(rows(tw))) == (1, 1, 2)


def test_the_next_window_reports_the_suppressed(
        make_tw: MakeTw, smtp: tuple[SmtpSink, int], hook: HttpSink) -> None:
    tw = make_tw(**both(smtp, hook, window_seconds=1))
    for _ in range(3):
        send(tw, NOTICE)
    time.sleep(1.2)
    assert send(tw, NOTICE) == ["sent", "sent"]
    assert [b["occurrences"] for b in hook.bodies] == [1, 3]
    assert smtp[0].messages[-1]["Subject"].endswith("(3x)")
    assert [r.occurrences for r in rows(tw)] == [1, 1, 3, 3]


def test_below_min_severity_nothing_is_sent_nor_counted(
        make_tw: MakeTw, smtp: tuple[SmtpSink, int], hook: HttpSink,
        redis_client: redis.Redis) -> None:
    tw = make_tw(**both(smtp, hook, min_severity="critical"))
    high = FailureNotice(**{**NOTICE.to_json(), "severity": "high"})
    assert send(tw, high) == []
    assert (smtp[0].messages, hook.bodies, rows(tw)) == ([], [], [])
    assert written_keys(redis_client) == []


def test_without_channels_nothing_happens(make_tw: MakeTw, redis_client: redis.Redis) -> None:
    tw = make_tw()
    assert send(tw, NOTICE) == []
    assert rows(tw) == []
    assert written_keys(redis_client) == []


def test_without_redis_it_sends_anyway(
        make_tw: MakeTw, smtp: tuple[SmtpSink, int], hook: HttpSink) -> None:
    tw = make_tw(broker_url=f"redis://127.0.0.1:{free_port()}/0", **both(smtp, hook))
    assert send(tw, NOTICE) == ["sent", "sent"]
    assert len(smtp[0].messages) == 1


@pytest.mark.parametrize(("minimum", "severity", "expected"), [
    ("high", "low", False), ("high", "medium", False), ("high", "high", True),
    ("high", "critical", True), ("low", "low", True), ("critical", "high", False),
])
def test_should_notify(minimum: str, severity: str, expected: bool) -> None:
    settings = load_settings(notify={"min_severity": minimum})
    assert should_notify(severity, settings.notify.min_severity) is expected


def test_should_notify_rejects_unknown_severity() -> None:
    with pytest.raises(InvalidInput, match="severity"):
        should_notify("urgent", Severity.HIGH)


def test_the_task_is_urgent_and_delivers(
        make_tw: MakeTw, smtp: tuple[SmtpSink, int], hook: HttpSink) -> None:
    tw = make_tw(**both(smtp, hook))  # every Taskworks has the notification task built in
    task = tw.app.tasks[NOTIFY_TASK]
    assert (task.queue, task.priority) == ("priority", 9)
    assert task(NOTICE.to_json()) == ["sent", "sent"]  # the body a worker runs
    assert len(rows(tw)) == 2
