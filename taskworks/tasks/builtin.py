"""The built-in tasks, declared on an app: health check, cleanup of expired data, the
daily report, a diagnostic, and those of notifications, http_call, db_operation and the
workflow engine. What each does lives in its own module (health.py, housekeeping.py...).
"""

from __future__ import annotations

import os
import socket
from typing import Any

from celery import Celery

from taskworks.declaring import TaskDecorator
from taskworks.logs import get_logger
from taskworks.notify import task as notify_task
from taskworks.resilience.breaker_registry import Breakers
from taskworks.runtime.retry import RetryPolicies
from taskworks.settings import Settings
from taskworks.store.engine import Store
from taskworks.tasks import db_operation, http_call
from taskworks.tasks.health import health_check
from taskworks.tasks.housekeeping import cleanup_expired, daily_report
from taskworks.workflows import tasks as workflow_tasks
from taskworks.workflows.api import Workflows

__all__ = ["CLEANUP", "DAILY_REPORT", "HEALTH_CHECK", "WHERE", "register"]

log = get_logger("taskworks.builtin")

HEALTH_CHECK = "taskworks.monitoring.health_check"
CLEANUP = "taskworks.cleanup.expired_data"
DAILY_REPORT = "taskworks.reports.daily"
WHERE = "taskworks.diagnostics.where"


def register(declare: TaskDecorator, *, app: Celery, store: Store, settings: Settings,
             policies: RetryPolicies, breakers: Breakers, workflows: Workflows) -> None:
    """Declare every built-in task with ``declare`` (``tw.task``), each given only what it
    uses."""
    notify_task.register(declare, settings, store)
    http_call.register(declare, policies, breakers, settings.http_call)
    db_operation.register(declare, store, settings.databases)

    def queue(preferred: str) -> str:
        # a topology without the patterns guide's queues still gets working built-ins
        return preferred if preferred in settings.queues else settings.default_queue

    @declare(name=HEALTH_CHECK, queue=queue("priority"), priority=9,
             soft_time_limit=30, time_limit=60)
    def _health_check() -> dict[str, Any]:
        return health_check(app, store)

    @declare(name=CLEANUP, queue=queue("scheduled"))
    def _cleanup() -> dict[str, int]:
        return cleanup_expired(store, settings, app.conf.broker_url)

    @declare(name=DAILY_REPORT, queue=queue("scheduled"))
    def _daily_report(day: str | None = None) -> dict[str, Any]:
        return daily_report(store, day)

    @declare(name=WHERE, bind=True)
    def _where(self: Any, label: str = "") -> dict[str, Any]:
        """Report where this task ran: used by the demo and by diagnostics."""
        info = self.request.delivery_info or {}
        return {
            "label": label, "queue": info.get("routing_key"), "hostname": self.request.hostname,
            "host": socket.gethostname(), "pid": os.getpid(),
        }

    # the step wrapper and the recovery sweep
    workflow_tasks.register(declare, workflows, app.conf.beat_schedule,
                            sweep_queue=queue("scheduled"))
