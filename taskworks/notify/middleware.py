"""Sends a failure notice for every task that fails for good at or above ``min_severity``.

The patterns guide called send_error_notification from inside the failing task; here the failing
worker only publishes a small message to the notification task (priority queue,
priority 9) and goes on: a slow SMTP server never holds a worker, and the dedupe window
and delivery records are the notification task's business (notify/service.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from taskworks.logs import get_logger
from taskworks.notify.notice import FailureNotice
from taskworks.notify.service import channels, should_notify
from taskworks.notify.task import NOTIFY_TASK
from taskworks.redaction import error_message, redact_text
from taskworks.runtime.middleware import Middleware, TaskContext
from taskworks.runtime.severity import Severity
from taskworks.settings import NotifySettings

__all__ = ["TRACEBACK_EXCERPT", "NotifyMiddleware", "SendNotice", "notice_of"]

#: publishes a notice (``FailureNotice.to_json()``) to the notification task: its task id
SendNotice = Callable[[dict[str, Any]], str]

log = get_logger("taskworks.notify")

#: characters of the traceback's end carried in a notice
TRACEBACK_EXCERPT = 2000


def notice_of(ctx: TaskContext) -> FailureNotice:
    exc = ctx.exc
    return FailureNotice(
        task_name=ctx.name, task_id=ctx.task_id,
        exc_type=type(exc).__name__ if exc is not None else "unknown",
        # redacted whole, then cut: a cut could leave half a value unrecognisable
        exc_message=error_message(exc)[:1000] if exc is not None else "",
        severity=ctx.severity or Severity.LOW, hostname=ctx.hostname or "",
        attempt=ctx.attempt,
        traceback_excerpt=redact_text(ctx.traceback or "")[-TRACEBACK_EXCERPT:],
    )


class NotifyMiddleware(Middleware):
    def __init__(self, settings: NotifySettings, send: SendNotice) -> None:
        self.min_severity = settings.min_severity
        self.send = send
        self.enabled = bool(channels(settings))

    def on_exhausted(self, ctx: TaskContext) -> None:
        if not self.enabled or ctx.name == NOTIFY_TASK or ctx.ended_elsewhere:
            # nothing configured; never about the notifier itself; and a task another
            # copy of which already failed for good was notified about then
            return
        if not should_notify(ctx.severity or Severity.LOW, self.min_severity):
            return
        notification = self.send(notice_of(ctx).to_json())
        log.info("failure notification queued", task=ctx.name, task_id=ctx.task_id,
                 severity=ctx.severity, notification=notification)
