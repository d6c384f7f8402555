"""A task failing for good on a real worker reaches a real SMTP and HTTP server, once per window."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import delete, select

from taskworks.notify.task import NOTIFY_TASK
from taskworks.runtime import journal
from taskworks.store.tables import JournalEntry, Notification
from tests.notify import HttpSink, SmtpSink, http_server, smtp_server
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess


@pytest.fixture
def sinks() -> Iterator[tuple[SmtpSink, int, HttpSink]]:
    smtp = SmtpSink()
    with smtp_server(smtp) as port, http_server(HttpSink()) as hook:
        yield smtp, port, hook


def _notify_env(port: int, hook: HttpSink, min_severity: str = "high") -> dict[str, str]:
    return {"TASKWORKS_NOTIFY": json.dumps({
        "email": {"host": "127.0.0.1", "port": port, "recipients": ["ops@example.org"],
                  "timeout": 5},
        "webhook": {"url": hook.url, "timeout": 5},
        "min_severity": min_severity,
    })}


def _notifications(tw: Any) -> list[Notification]:
    with tw.store.session() as session:
        return list(session.scalars(select(Notification).order_by(Notification.id)))


@pytest.fixture
def clean(tw: Any) -> Any:
    with tw.store.session() as session:
        session.execute(delete(Notification))
        session.execute(delete(JournalEntry))
    return tw


def test_critical_failures_are_sent_once_per_window_with_a_count(
    clean: Any, sinks: tuple[SmtpSink, int, HttpSink],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    tw = clean
    smtp, port, hook = sinks
    start_worker(["default", "priority"], env=_notify_env(port, hook))
    tw.submit("tests.critical", ["disk on fire"]).get(timeout=30, propagate=False)
    wait_for(lambda: len(smtp.messages) == 1 and len(hook.bodies) == 1, what="one alert")
    message = smtp.messages[0]
    assert "CRITICAL" in message["Subject"]
    assert "tests.critical" in message["Subject"]
    assert "disk on fire" in message.get_content()
    assert hook.bodies[0]["task_name"] == "tests.critical"

    # the same task and exception type inside the window: nothing more is sent
    tw.submit("tests.critical", ["again"]).get(timeout=30, propagate=False)
    tw.submit("tests.critical", ["and again"]).get(timeout=30, propagate=False)
    wait_for(lambda: journal.counts_by_state(tw.store, NOTIFY_TASK).get("success") == 3,
             what="three notification tasks done")
    assert len(smtp.messages) == 1
    assert len(hook.bodies) == 1
    rows = wait_for(lambda: len(_notifications(tw)) == 2 and _notifications(tw),
                    what="two delivery rows")
    assert sorted((r.channel, r.status) for r in rows) == [("email", "sent"),
                                                           ("webhook", "sent")]


def test_failures_below_min_severity_are_not_sent(
    clean: Any, sinks: tuple[SmtpSink, int, HttpSink],
    start_worker: Callable[..., WorkerProcess],
) -> None:
    tw = clean
    smtp, port, hook = sinks
    start_worker(["default", "priority"], env=_notify_env(port, hook))
    # tests.echo fails with ValueError: severity low, under the "high" threshold
    tw.submit("tests.echo", [3], {"fail_every": 3}).get(timeout=30, propagate=False)
    tw.submit("tests.critical", ["over the threshold"]).get(timeout=30, propagate=False)
    wait_for(lambda: len(smtp.messages) == 1, what="the critical alert")
    assert "over the threshold" in smtp.messages[0].get_content()
    assert all(body["task_name"] == "tests.critical" for body in hook.bodies)


def test_the_middleware_needs_only_its_settings_and_a_sender() -> None:
    """Built by the composition root with ``notify`` settings and the function that
    publishes a notice: what it sends, and when it does not."""
    from taskworks.notify.middleware import NotifyMiddleware
    from taskworks.notify.notice import FailureNotice
    from taskworks.runtime.middleware import TaskContext
    from taskworks.settings import NotifySettings, WebhookSettings

    sent: list[dict[str, Any]] = []

    def send(notice: dict[str, Any]) -> str:
        sent.append(notice)
        return f"notification-{len(sent)}"

    def failed(severity: str, name: str = "tests.job") -> TaskContext:
        return TaskContext(task=None, task_id="t-1", name=name, queue="default", args=(),
                           kwargs={}, attempt=2, options={}, hostname="w1",
                           exc=KeyError("gone"), severity=severity)

    hook = WebhookSettings(url="http://127.0.0.1:9/hook")
    middleware = NotifyMiddleware(NotifySettings(webhook=hook, min_severity="high"), send)
    for severity in ("low", "medium", "high", "critical"):
        middleware.on_exhausted(failed(severity))
    middleware.on_exhausted(failed("critical", name=NOTIFY_TASK))  # never about itself
    assert [FailureNotice.from_json(n).severity for n in sent] == ["high", "critical"]
    assert sent[0]["exc_type"] == "KeyError"
    assert sent[0]["attempt"] == 2
    NotifyMiddleware(NotifySettings(), send).on_exhausted(failed("critical"))
    assert len(sent) == 2  # no channel configured: nothing to send
