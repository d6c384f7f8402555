"""Recycling of solo workers (taskworks/runtime/recycling.py): Celery recycles only prefork
children. Real solo worker processes on the session's Valkey; nothing restarts them here,
so each exit is observed as it is."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis

from taskworks.monitoring.queues import queue_depths
from taskworks.runtime.recycling import SOLO_RECYCLING_ENV
from tests.support.workers import WorkerProcess

ON = {SOLO_RECYCLING_ENV: "true"}
#: a solo worker allowed to take up to 4 messages ahead
PREFETCHING = ["--group", "ahead"]
PREFETCHING_ENV = {"TASKWORKS_WORKER_GROUPS": json.dumps({"ahead": {
    "queues": ["default"], "pool": "solo", "concurrency": 1, "prefetch_multiplier": 4}})}


def _recorded(client: redis.Redis) -> list[tuple[str, int]]:
    """(label, pid) of every tests.record run, in order."""
    return [(label, int(pid)) for label, _, pid in
            (entry.split("|") for entry in client.lrange("tests:order", 0, -1))]


def test_past_solo_max_tasks_a_solo_worker_exits_0_holding_no_message(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    results = [tw.submit("tests.record", [f"r{i}"]) for i in range(10)]
    limit = {"TASKWORKS_WORKER__SOLO_MAX_TASKS": "3"}
    first = start_worker(["default"], env={**ON, **limit, **PREFETCHING_ENV}, ready=False,
                         args=PREFETCHING)
    assert first.proc.wait(30) == 0  # Celery's warm shutdown
    log = first.log_path.read_text()
    assert "solo worker recycling itself" in log
    assert "reason=solo_max_tasks" in log
    assert [pid for _, pid in _recorded(redis_client)] == [first.proc.pid] * 3
    # The rest is in the queue at once and nothing is held: neither the third task's
    # message (its acknowledgement waits for the next take, and went out as the channel
    # closed) nor one taken ahead (a solo worker runs each message as it takes it, even
    # allowed 4; one taken and not started would be restored as the channel closes).
    # No heartbeat sweep could have run: no other consumer beats, and 6 s have not passed.
    assert log.count("] received") == 3
    depth = queue_depths(redis_client, ["default"])["default"]
    assert (depth.waiting, depth.unacked) == (7, 0)

    # the rest runs on the next worker, each task once; without the switch a solo worker
    # is not recycled (nothing here would start another one)
    second = start_worker(["default"], env={**limit, **PREFETCHING_ENV}, args=PREFETCHING)
    assert sorted(r.get(timeout=30)["label"] for r in results) == sorted(
        f"r{i}" for i in range(10))
    recorded = _recorded(redis_client)
    assert sorted(label for label, _ in recorded) == sorted(f"r{i}" for i in range(10))
    assert [pid for _, pid in recorded[3:]] == [second.proc.pid] * 7
    assert second.proc.poll() is None
    assert "recycling itself" not in second.log_path.read_text()


def test_past_max_memory_per_child_a_solo_worker_recycles_after_its_task(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    first, second = (tw.submit("tests.record", [label]) for label in ("m1", "m2"))
    worker = start_worker(["default"], env={**ON, "TASKWORKS_WORKER__MAX_MEMORY_PER_CHILD": "1"},
                          ready=False)
    assert worker.proc.wait(30) == 0
    assert first.get(timeout=5)["label"] == "m1"  # the task ran to its end first
    log = worker.log_path.read_text()
    assert "reason=max_memory_per_child" in log
    assert "rss_kb=" in log
    assert _recorded(redis_client) == [("m1", worker.proc.pid)]
    assert not second.ready()
    depth = queue_depths(redis_client, ["default"])["default"]
    assert (depth.waiting, depth.unacked) == (1, 0)


def test_after_a_memory_error_a_supervised_solo_worker_replaces_itself(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    """A MemoryError's default callback asks for a fresh heap: a prefork child is
    replaced by its pool; a solo worker under a supervisor shuts itself down warm after
    the task. Without the switch it stays up (nothing would start the next one)."""
    failed, after = tw.submit("tests.memory_hog", [True]), tw.submit("tests.memory_hog", [False])
    worker = start_worker(["default"], env=ON, ready=False)
    assert worker.proc.wait(30) == 0
    failed.get(timeout=5, propagate=False)
    assert failed.state == "FAILURE"
    assert "reason=memory_error" in worker.log_path.read_text()
    assert not after.ready()  # left in the queue for the next process

    unsupervised = start_worker(["default"])
    assert after.get(timeout=30) == unsupervised.proc.pid
    again = tw.submit("tests.memory_hog", [True])
    again.get(timeout=30, propagate=False)
    assert again.state == "FAILURE"
    assert tw.submit("tests.memory_hog", [False]).get(timeout=30) == unsupervised.proc.pid
    assert unsupervised.proc.poll() is None
