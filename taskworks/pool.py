"""Celery's prefork pool, with flat memory under time limits.

For every task the prefork parent schedules a soft-time-limit timer in its event loop's
heap, and cancelling it when the task ends only flags the entry: it stays in the heap
until its due time (``task_soft_time_limit``, 1,500 s by default here). About 550 bytes
per task, so a parent draining 800 tasks/s held over 600 MB of cancelled timers, and
every recycled child forked from it inherited them (celery #1129, #1427, #5200). Short
tasks made it worse: when a task's result reaches the parent before its start
confirmation, billiard still sets a timer for the finished job, which nothing cancels.

This pool sets no timer for a job that has already finished, and compacts the heap once
cancelled entries are at least half of it (and at least ``COMPACT_MIN``): memory is
bounded by the tasks in flight, not by throughput x time limit. Time limits still fire
(tests/test_pool.py). ``topology.celery_config`` makes it the worker's ``prefork`` pool.
"""

from __future__ import annotations

import heapq
from typing import Any

from celery.concurrency import asynpool, prefork

__all__ = ["COMPACT_MIN", "POOL", "AsynPool", "TaskPool"]

#: compact the timer heap once this many cancelled entries make up half of it
COMPACT_MIN = 1024


class AsynPool(asynpool.AsynPool):  # type: ignore[misc]
    def _create_timelimit_handlers(self, hub: Any) -> None:
        super()._create_timelimit_handlers(hub)  # keeps _tref_for_id across reconnects
        trefs = self._tref_for_id
        call_later = hub.call_later
        timer = hub.timer
        cancelled = 0

        def on_timeout_set(job: Any, soft: float | None, hard: float | None) -> None:
            if job.ready():  # its result came first: nothing to time, nobody would cancel
                return
            if soft:
                trefs[job._job] = call_later(soft, self._on_soft_timeout, job._job, soft,
                                             hard, hub)
            elif hard:
                trefs[job._job] = call_later(hard, self._on_hard_timeout, job._job)

        def on_timeout_cancel(job: Any) -> None:
            nonlocal cancelled
            tref = trefs.pop(job._job, None)
            if tref is None:
                return
            tref.cancel()  # kombu only flags it: it would stay in the heap until due
            cancelled += 1
            queue = timer._queue
            if cancelled >= COMPACT_MIN and 2 * cancelled >= len(queue):
                # in place: the timer's own loop holds this very list
                queue[:] = [entry for entry in queue if not entry.entry.canceled]
                heapq.heapify(queue)
                cancelled = 0

        self.on_timeout_set = on_timeout_set
        self.on_timeout_cancel = on_timeout_cancel


class TaskPool(prefork.TaskPool):  # type: ignore[misc]
    Pool = AsynPool


#: by name: Celery resolves ``worker_pool`` itself, and ``--pool prefork`` maps to it
POOL = f"{__name__}:TaskPool"
