"""The Celery task that delivers a failure notice off the failing task's path."""

from __future__ import annotations

from typing import Any

from taskworks.declaring import TaskDecorator
from taskworks.notify.notice import FailureNotice
from taskworks.notify.service import deliver
from taskworks.settings import Settings
from taskworks.store.engine import Store

__all__ = ["NOTIFY_TASK", "register"]

NOTIFY_TASK = "taskworks.notify.failure"


def register(declare: TaskDecorator, settings: Settings, store: Store) -> None:
    """Declare the notification task with ``declare`` (``tw.task``): it sends through
    ``settings.notify``'s channels and records each attempt in ``store``."""
    # urgent, and on its own worker, so a backlog elsewhere does not delay the alert
    queue = "priority" if "priority" in settings.queues else settings.default_queue
    notify, broker_url = settings.notify, settings.effective_broker_url

    @declare(name=NOTIFY_TASK, queue=queue, priority=9)
    def _notify(notice: dict[str, Any]) -> list[str]:
        return deliver(FailureNotice.from_json(notice), notify, broker_url, store)
