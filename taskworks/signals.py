"""Celery signal handlers: per-process resources and task logging context.

The patterns guide's prerun/postrun handlers log every task start and finish; here they also bind
the task id and name to the logging context, so every line inside a task carries them.
Handlers are filtered to the app they were connected for, so two apps never interfere.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import structlog
from celery import Celery, signals

from taskworks.logs import get_logger
from taskworks.runtime.adoption import adopt_tasks
from taskworks.runtime.middleware import Runtime, TaskContext
from taskworks.runtime.recycling import SoloRecycling
from taskworks.runtime.timelimits import SoloTimeLimits
from taskworks.store.engine import Store

__all__ = ["connect"]

log = get_logger("taskworks.task")
#: the stdlib logger under ``log``: its level check is cached, structlog's runs a processor
lines = logging.getLogger("taskworks.task")


def connect(app: Celery, runtime: Runtime, store: Store, *,
            recycling: SoloRecycling | None = None) -> None:
    """Connect the handlers of ``app``'s tasks and worker processes: logging context, time
    limits and ``recycling`` in solo workers (runtime/timelimits.py,
    runtime/recycling.py), the runtime's adoption of the app's own tasks at worker
    start, the store's per-process connections, and the runtime's flush at shutdown."""

    def mine(task: Any) -> bool:
        return task is not None and getattr(task, "app", None) is app

    limits = SoloTimeLimits()

    def on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
        if not mine(task):
            return
        limits.start(task)
        structlog.contextvars.bind_contextvars(task_id=task_id, task_name=task.name)
        if lines.isEnabledFor(logging.INFO):  # below the level, not even structlog's chain
            log.info("task started",
                     queue=(task.request.delivery_info or {}).get("routing_key"))

    def on_postrun(task_id: str | None = None, task: Any = None, state: str | None = None,
                   **_: Any) -> None:
        if not mine(task):
            return
        limits.stop()
        if lines.isEnabledFor(logging.INFO):
            log.info("task finished", state=state)
        structlog.contextvars.unbind_contextvars("task_id", "task_name")
        if recycling is not None:
            recycling.after_task(task)

    def on_worker_init(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            # the app's modules are imported, no tracer is built yet: every task of the
            # app that taskworks did not declare gets the runtime here (adoption.py)
            adopt_tasks(app, runtime)
        # Everything loaded so far lives as long as the worker: move it out of the
        # collector's reach. The prefork parent runs a full gc.collect() before each
        # fork (every max_tasks_per_child tasks); over the whole app that was a tenth of
        # its CPU on short tasks. Forked children share these pages untouched, too.
        gc.freeze()

    def on_process_init(**_: Any) -> None:
        # a forked child must open its own connections, never reuse the parent's
        store.dispose()
        store.engine  # noqa: B018  (the child's own pool, created now, not mid-task)

    def on_process_shutdown(**_: Any) -> None:
        runtime.shutdown()  # flush the journal before the store goes away
        store.dispose()

    def on_revoked(sender: Any = None, request: Any = None, expired: bool = False,
                   **_: Any) -> None:
        task = sender  # the task object; request is its Context
        if not mine(task) or getattr(task, "runtime", None) is None:
            return
        info = getattr(request, "delivery_info", None) or {}
        ctx = TaskContext(
            task=task, task_id=request.id, name=task.name, queue=info.get("routing_key"),
            args=tuple(request.args or ()), kwargs=dict(request.kwargs or {}), attempt=1,
            options=task.taskworks_options, hostname=getattr(request, "hostname", None),
        )
        ctx.expired = bool(expired)
        runtime.revoked(ctx)

    # weak=False: these closures have no other owner
    signals.task_prerun.connect(on_prerun, weak=False)
    signals.task_postrun.connect(on_postrun, weak=False)
    signals.worker_init.connect(on_worker_init, weak=False)
    signals.worker_process_init.connect(on_process_init, weak=False)
    signals.worker_process_shutdown.connect(on_process_shutdown, weak=False)
    signals.worker_shutdown.connect(on_process_shutdown, weak=False)
    signals.task_revoked.connect(on_revoked, weak=False)
