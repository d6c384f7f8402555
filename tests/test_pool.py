"""The prefork pool (taskworks/pool.py): the parent's timer heap stays bounded by the
tasks in flight, and time limits still fire."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from taskworks.pool import COMPACT_MIN
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess

TASKS = 3 * COMPACT_MIN


def _heap(tw: Any, worker: WorkerProcess) -> int:
    [reply] = tw.app.control.inspect(destination=[worker.hostname], timeout=5) \
        ._request("timer_heap").values()
    return int(reply["entries"])


def test_the_timer_heap_stays_bounded_and_time_limits_still_fire(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(["default"], pool="prefork", concurrency=2)
    assert tw.settings.worker.soft_time_limit  # every task sets a timer in the parent
    ids = tw.submit_many("tests.echo", [[i] for i in range(TASKS)])
    last = tw.app.AsyncResult(ids[-1])
    assert last.get(timeout=120) == TASKS - 1
    wait_for(lambda: all(tw.app.AsyncResult(i).ready() for i in ids[-50:]), timeout=30,
             what="the last tasks")
    # Celery's pool keeps one cancelled timer per task until it is due (1,500 s): the
    # heap would hold about TASKS entries here
    assert _heap(tw, worker) < COMPACT_MIN + 100

    task = tw.app.tasks["tests.sleeps"]
    soft = task.apply_async([10], soft_time_limit=1, time_limit=5)
    with pytest.raises(SoftTimeLimitExceeded):
        soft.get(timeout=30, propagate=True)
    hard = task.apply_async([10], soft_time_limit=1, time_limit=2)
    hard_ignoring = tw.app.tasks["tests.ignores_soft_limit"].apply_async(
        [10], soft_time_limit=1, time_limit=2)
    with pytest.raises(TimeLimitExceeded):
        hard_ignoring.get(timeout=30, propagate=True)
    with pytest.raises(SoftTimeLimitExceeded):
        hard.get(timeout=30, propagate=True)
