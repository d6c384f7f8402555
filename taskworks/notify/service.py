"""Deliver one failure notice: severity filter, dedupe window, every configured channel,
one ``notifications`` row per channel attempt."""

from __future__ import annotations

import dataclasses

import redis
from sqlalchemy.exc import SQLAlchemyError

from taskworks.broker.urls import redis_client
from taskworks.errors import InvalidInput, NotificationError
from taskworks.logs import get_logger
from taskworks.notify.channels import Channel, EmailChannel, WebhookChannel
from taskworks.notify.dedupe import Deduper
from taskworks.notify.notice import FailureNotice
from taskworks.redaction import error_message
from taskworks.runtime.severity import Severity
from taskworks.settings import NotifySettings
from taskworks.store.engine import Store
from taskworks.store.tables import Notification

__all__ = ["REDIS_TIMEOUT", "channels", "deliver", "should_notify"]

log = get_logger("taskworks.notify")

#: seconds to reach Redis for the dedupe before sending without it
REDIS_TIMEOUT = 5.0
_SCALE = list(Severity)


def should_notify(severity: str, min_severity: Severity) -> bool:
    """Whether a failure of this severity reaches ``min_severity`` (``notify.min_severity``)."""
    try:
        level = Severity(severity)
    except ValueError:
        raise InvalidInput("severity", severity, f"one of {', '.join(Severity)}") from None
    return _SCALE.index(level) >= _SCALE.index(min_severity)


def channels(settings: NotifySettings) -> list[Channel]:
    """The configured channels, email first."""
    found: list[Channel] = []
    if settings.email is not None:
        found.append(EmailChannel(settings.email))
    if settings.webhook is not None:
        found.append(WebhookChannel(settings.webhook))
    return found


def _admit(window_seconds: int, broker_url: str, notice: FailureNotice) -> int | None:
    client = redis_client(broker_url, socket_timeout=REDIS_TIMEOUT,
                          socket_connect_timeout=REDIS_TIMEOUT)
    try:
        return Deduper(client, window_seconds).admit(
            notice.task_name, notice.exc_type)
    except redis.RedisError as exc:
        # a duplicate alert beats a lost one: send without the window
        log.warning("notification dedupe unavailable, sending anyway", error=str(exc))
        return notice.occurrences
    finally:
        client.close()


def deliver(notice: FailureNotice, settings: NotifySettings, broker_url: str, store: Store
            ) -> list[str]:
    """Send ``notice`` through every channel ``settings`` configures; the statuses
    ("sent"/"failed"), email first, or [] when below ``min_severity``, suppressed (the
    dedupe window lives in the Redis at ``broker_url``) or nothing is configured. One
    row per channel attempt goes to ``store``.

    A failing channel never stops the others and never raises: its row says "failed".
    """
    configured = channels(settings)
    if not configured or not should_notify(notice.severity, settings.min_severity):
        return []
    occurrences = _admit(settings.window_seconds, broker_url, notice)
    if occurrences is None:
        log.info("notification suppressed in window", task_name=notice.task_name,
                 exc_type=notice.exc_type)
        return []
    notice = dataclasses.replace(notice, occurrences=occurrences)
    subject = notice.subject()
    rows: list[Notification] = []
    for channel in configured:
        error: str | None = None
        try:
            channel.send(notice)
        except NotificationError as exc:
            error = error_message(exc)  # a server's answer may quote what it was sent
        except Exception as exc:
            # a bug in one channel must not silence the others; no traceback in the log,
            # a rich one would print the channel's locals, secrets included
            error = f"{type(exc).__name__}: {error_message(exc)}"
        status = "sent" if error is None else "failed"
        (log.info if error is None else log.warning)(
            "failure notification", channel=channel.name, status=status,
            task_name=notice.task_name, exc_type=notice.exc_type, occurrences=occurrences,
            error=error)
        rows.append(Notification(
            channel=channel.name, task_name=notice.task_name, exc_type=notice.exc_type,
            severity=notice.severity, occurrences=occurrences, subject=subject,
            status=status, error=error,
        ))
    try:
        with store.session() as session:
            session.add_all(rows)
    except SQLAlchemyError as exc:
        # what was sent is sent; failing here would get the task retried and resend it
        log.error("notification records lost", error=str(exc).splitlines()[0],
                  statuses=[row.status for row in rows])
    return [row.status for row in rows]
