"""The Celery task that delivers a failure notice off the failing task's path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskworks.notify.notice import FailureNotice
from taskworks.notify.service import deliver

if TYPE_CHECKING:
    from taskworks.app import Taskworks

NOTIFY_TASK = "taskworks.notify.failure"


def register(tw: Taskworks) -> None:
    """Declare the notification task on ``tw``'s app."""
    # urgent, and on its own worker, so a backlog elsewhere does not delay the alert
    queue = "priority" if "priority" in tw.settings.queues else tw.settings.default_queue

    @tw.task(name=NOTIFY_TASK, queue=queue, priority=9)
    def _notify(notice: dict[str, Any]) -> list[str]:
        return deliver(tw, FailureNotice.from_json(notice))
