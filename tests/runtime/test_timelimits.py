"""Time limits in solo workers (taskworks/runtime/timelimits.py): Celery times only
prefork children."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery.exceptions import SoftTimeLimitExceeded

from taskworks.runtime.timelimits import HARD_LIMIT_EXIT
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess


def test_a_solo_worker_raises_the_soft_limit_inside_the_task_and_goes_on(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(["default"], pool="solo")
    started = time.monotonic()
    result = tw.app.tasks["tests.sleeps"].apply_async([30], soft_time_limit=1, time_limit=20)
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=20, propagate=True)
    assert time.monotonic() - started < 10
    # the worker goes on: the next task runs, and is not cut short by a stale alarm
    assert tw.app.tasks["tests.sleeps"].apply_async([1.5], soft_time_limit=5).get(
        timeout=20) == "slept"


def test_a_solo_worker_past_the_hard_limit_exits_and_its_message_goes_back(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(["default"], pool="solo")
    sent = time.monotonic()
    tw.app.tasks["tests.ignores_soft_limit"].apply_async([30], soft_time_limit=1,
                                                         time_limit=2)
    wait_for(lambda: worker.proc.poll() is not None, timeout=20,
             what="the worker to exit at the hard limit")
    assert worker.proc.returncode == HARD_LIMIT_EXIT
    assert time.monotonic() - sent < 10
    assert "hard time limit exceeded" in worker.log_path.read_text()
    # held by the dead worker: back in the queue once its heartbeat lapses
    wait_for(lambda: redis_client.llen("default\x06\x164") + redis_client.llen("default")
             == 1, timeout=15, what="the message back in its queue")
