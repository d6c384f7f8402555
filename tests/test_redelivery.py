"""acks_late + reject_on_worker_lost: a worker killed mid-task loses nothing."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import redis

from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess

SHORT_VISIBILITY = {"TASKWORKS_VISIBILITY_TIMEOUT": "3"}


def test_sigkilled_worker_task_is_redelivered_and_completes(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    first = start_worker(["default"], env=SHORT_VISIBILITY)
    result = tw.submit("tests.slow_mark", ["job", 3.0])
    wait_for(lambda: redis_client.get("job:runs") == "1", what="first attempt to start")
    first.kill()  # the whole worker, mid-task: the message was never acknowledged
    assert redis_client.get("job:done") is None

    start_worker(["default"], env=SHORT_VISIBILITY)
    assert result.get(timeout=40) == 2
    assert redis_client.get("job:runs") == "2"
    assert redis_client.get("job:done") == "1"


def test_killed_pool_child_is_requeued_by_the_parent(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(["default"], pool="prefork", concurrency=1)
    result = tw.submit("tests.slow_mark", ["child", 2.0])
    wait_for(lambda: redis_client.get("child:runs") == "1", what="first attempt to start")
    child_pid = int(redis_client.get("child:pid:1") or 0)
    assert child_pid in worker.children()
    os.kill(child_pid, signal.SIGKILL)

    # reject_on_worker_lost: the parent requeues at once, a fresh child runs it again
    assert result.get(timeout=30) == 2
    assert redis_client.get("child:done") == "1"
    assert int(redis_client.get("child:pid:2") or 0) != child_pid


def test_a_sweeper_killed_holding_the_restore_lock_delays_restores_by_seconds(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    """kombu's sweep of unacknowledged messages runs under a Redis lock (300 s by
    default); a worker SIGKILLed inside the sweep left it held, and no message was
    restored for five minutes (seen in the outage soak). taskworks keeps the lock for
    2 x the sweep interval + 5 s."""
    first = start_worker(["default"], env=SHORT_VISIBILITY)
    # the lock expiry the worker runs with (kombu's 300 s when nothing sets it)
    [conf] = tw.app.control.inspect(destination=[first.hostname], timeout=5).conf().values()
    expire = conf["broker_transport_options"].get("unacked_mutex_expire", 300)
    assert expire == 7  # 2 x the 1 s sweep interval of a 3 s visibility timeout + 5
    result = tw.submit("tests.slow_mark", ["held", 3.0])
    wait_for(lambda: redis_client.get("held:runs") == "1", what="first attempt to start")
    first.kill()
    # what that worker leaves when killed mid-sweep: the lock, taken as kombu's Mutex
    # takes it, never released
    lock = redis_client.lock("unacked_mutex", timeout=expire)
    assert lock.acquire(blocking=False)
    start_worker(["default"], env=SHORT_VISIBILITY)
    assert result.get(timeout=30) == 2  # restored once the lock lapsed, not in 300 s
    assert redis_client.get("held:done") == "1"
