"""Time limits for the solo pool, which Celery does not time.

Celery enforces ``task_soft_time_limit`` and ``task_time_limit`` only in the prefork pool
(its parent signals or kills the child). A solo worker runs each task in its own main
thread, with no one to stop it: a stuck task held its process, and every message the
process held, for ever. Here, for a task running in a worker's main thread:

- the soft limit raises ``SoftTimeLimitExceeded`` inside the task (``SIGALRM``, as the
  prefork child gets ``SIGUSR1``), so the task can clean up and the runtime records it.
  The handler is set once, at the first timed task, as billiard sets ``SIGUSR1``'s in
  its child: a task's own ``signal.alarm`` shares that timer, and so could not be timed
  by it either way;
- at the hard limit a watchdog thread ends the process (exit status 70, logged): its
  consumer stops beating and its messages go back to their queues within
  ``consumer_timeout`` (broker/heartbeat.py); the redelivery is counted against the
  task's redelivery limit, so a task that always hangs ends as a dead letter. Whoever
  runs the worker restarts it (``taskworks up``'s supervisor, systemd, Kubernetes).

Threads pools are not timed (a thread cannot be interrupted); prefork keeps Celery's.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from billiard.process import current_process
from celery.exceptions import SoftTimeLimitExceeded

from taskworks.logs import get_logger

__all__ = ["HARD_LIMIT_EXIT", "SoloTimeLimits", "runs_in_worker_main_thread"]

log = get_logger("taskworks.worker")

#: exit status of a worker process ended by a task's hard time limit (EX_SOFTWARE)
HARD_LIMIT_EXIT = 70


def runs_in_worker_main_thread(task: Any) -> bool:
    """True in a solo worker; False in a prefork child (timed by its parent), a threads
    pool's thread, or an eager call."""
    return (threading.current_thread() is threading.main_thread()
            and current_process().name == "MainProcess"
            and not getattr(task.request, "is_eager", False))


class SoloTimeLimits:
    def __init__(self, check_interval: float = 0.25) -> None:
        self.check_interval = check_interval
        #: (monotonic deadline, task name, task id) of the task running now
        self._hard: tuple[float, str, str] | None = None
        self._watchdog: threading.Thread | None = None
        self._armed = False
        #: SIGALRM's handler is this object's, set at the first timed task
        self._handler_set = False

    def start(self, task: Any) -> None:
        if not runs_in_worker_main_thread(task):
            return
        hard, soft = getattr(task.request, "timelimit", None) or (None, None)
        hard = hard or task.time_limit
        soft = soft or task.soft_time_limit
        if soft:
            if not self._handler_set:  # once: signal.signal was 2 % of a no-op task's CPU
                signal.signal(signal.SIGALRM, self._soft_limit)
                self._handler_set = True
            signal.setitimer(signal.ITIMER_REAL, float(soft))
            self._armed = True
        if hard:
            self._hard = (time.monotonic() + float(hard), task.name, str(task.request.id))
            if self._watchdog is None or not self._watchdog.is_alive():
                self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                                  name="taskworks-time-limit")
                self._watchdog.start()

    def stop(self) -> None:
        self._hard = None
        if self._armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self._armed = False

    @staticmethod
    def _soft_limit(signum: int, frame: Any) -> None:
        raise SoftTimeLimitExceeded()

    def _watch(self) -> None:
        while True:
            time.sleep(self.check_interval)
            hard = self._hard
            if hard is not None and time.monotonic() >= hard[0]:
                log.critical("hard time limit exceeded: the worker process exits; its "
                             "messages go back to their queues once its heartbeat lapses",
                             task=hard[1], task_id=hard[2])
                os._exit(HARD_LIMIT_EXIT)
