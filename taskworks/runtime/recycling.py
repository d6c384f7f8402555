"""Recycling for solo workers, which Celery recycles only in prefork.

Celery replaces a prefork child after ``worker_max_tasks_per_child`` tasks, or after a
task that leaves it past ``worker_max_memory_per_child`` (kB), so a leak in a task or a
library stays bounded. A solo worker has no child to replace: it grew for ever. Here a
solo worker (a task run in the worker's main thread, as for its time limits) past
``max_memory_per_child``, or past ``worker.solo_max_tasks`` when that is set, asks
itself for Celery's warm shutdown once the task has ended: SIGTERM to its own process.
Celery acknowledges the task, stops consuming, gives back the messages it had taken but
not started (its channel restores them as it closes) and exits 0.

Whoever runs the worker then starts a fresh process: ``taskworks worker``'s set of solo
processes and ``taskworks up``'s supervisor do at once (scaling/restarts.py). Elsewhere an
exit 0 is a stop (systemd's ``Restart=on-failure``) or earns a growing back-off
(Kubernetes), so this is on only where one of those two runs the worker: they set
``worker.solo_recycling`` in their processes' environment (``SOLO_RECYCLING_ENV``).
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from typing import Any

import psutil

from taskworks.logs import get_logger
from taskworks.runtime.timelimits import runs_in_worker_main_thread

__all__ = ["SOLO_RECYCLING_ENV", "SoloRecycling"]

log = get_logger("taskworks.worker")

#: the environment variable of ``worker.solo_recycling``
SOLO_RECYCLING_ENV = "TASKWORKS_WORKER__SOLO_RECYCLING"

# ru_maxrss is in bytes on macOS, in kB elsewhere
_MAXRSS_PER_KB = 1024 if sys.platform == "darwin" else 1


class SoloRecycling:
    """Counts the tasks a solo worker ran and watches its memory (``max_tasks`` or
    ``max_memory_kb`` None: no such limit), and replaces the worker after a task when
    asked to (``request_after_task``). One per app, made only where ``solo_recycling``
    is on: where a supervisor starts the next process."""

    def __init__(self, max_tasks: int | None, max_memory_kb: int | None) -> None:
        self.max_tasks = max_tasks
        self.max_memory_kb = max_memory_kb
        self.tasks = 0
        self._asked = False
        #: a recycle asked for after the task in hand (a MemoryError's callback)
        self.requested = False
        self._process: psutil.Process | None = None

    def request_after_task(self, task: Any) -> bool:
        """Have this solo worker replace itself once ``task`` (running now) has ended: the
        MemoryError callback's way to get a fresh heap (runtime/severity.py). False
        outside a solo worker's main thread."""
        if not runs_in_worker_main_thread(task):
            return False
        self.requested = True
        return True

    def after_task(self, task: Any) -> None:
        """Count a task that ended; past a limit, ask for the warm shutdown (once)."""
        if self._asked or not runs_in_worker_main_thread(task):
            return
        self.tasks += 1
        if self.requested:
            self._recycle(reason="memory_error")
        elif self.max_tasks is not None and self.tasks >= self.max_tasks:
            self._recycle(reason="solo_max_tasks", limit=self.max_tasks)
        elif self.max_memory_kb is not None:
            rss = self._rss_over_limit()
            if rss is not None:
                self._recycle(reason="max_memory_per_child", limit=self.max_memory_kb,
                              rss_kb=rss)

    def _rss_over_limit(self) -> int | None:
        """The resident size (kB) when it passes the limit, else None. The peak size is one
        cheap system call per task; the current one (a /proc read, ~10x the cost) is
        read only once the peak has passed the limit."""
        assert self.max_memory_kb is not None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // _MAXRSS_PER_KB
        if peak <= self.max_memory_kb:
            return None
        if self._process is None:
            self._process = psutil.Process()
        rss = self._process.memory_info().rss // 1024
        return rss if rss > self.max_memory_kb else None

    def _recycle(self, **why: Any) -> None:
        self._asked = True
        log.info("solo worker recycling itself: warm shutdown after this task, a new "
                 "process takes over", tasks=self.tasks, pid=os.getpid(), **why)
        # Celery's SIGTERM handler only sets a flag: the acknowledgement of this task and
        # the rest of its bookkeeping go on; the consumer stops at its next turn
        os.kill(os.getpid(), signal.SIGTERM)

