"""The patterns guide's queue topology with real workers: routes, explicit queues, priorities."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from taskworks.errors import InvalidInput
from tests.support.keys import written_keys
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess

ROUTED = {
    "tasks.cpu_intensive.crunch": "cpu_intensive",
    "tasks.io_intensive.fetch": "io_intensive",
    "tasks.priority.alert": "priority",
    "tasks.scheduled.nightly": "scheduled",
    "tests.record": "default",
}


def test_route_of_follows_the_globs(tw: Any) -> None:
    assert {name: tw.route_of(name) for name in ROUTED} == ROUTED
    assert tw.route_of("taskworks.monitoring.health_check") == "priority"


def test_each_task_name_runs_on_its_queue(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # one worker per queue: a task can only run where its queue is consumed
    workers = {q: start_worker([q]) for q in sorted(set(ROUTED.values()))}
    results = {name: tw.submit(name, [name]) for name in ROUTED}
    ran = {name: r.get(timeout=20) for name, r in results.items()}
    assert {name: info["queue"] for name, info in ran.items()} == ROUTED
    assert len({info["pid"] for info in ran.values()}) == len(workers)


def test_explicit_queue_overrides_the_route(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(["io_intensive"])
    info = tw.submit("tests.record", ["x"], queue="io_intensive").get(timeout=20)
    assert info["queue"] == "io_intensive"


def test_priority_nine_is_served_before_zero_under_a_backlog(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # the backlog exists before any worker consumes the queue
    labels = []
    for i in range(10):
        for priority in (0, 9, 4):
            label = f"p{priority}-{i}"
            labels.append(label)
            tw.submit("tests.record", [label], queue="priority", priority=priority)
    start_worker(["priority"])
    wait_for(lambda: redis_client.llen("tests:order") == len(labels), what="all 30 tasks")
    entries = redis_client.lrange("tests:order", 0, -1)
    order = [entry.split("|")[0].split("-")[0] for entry in entries]
    assert order == ["p9"] * 10 + ["p4"] * 10 + ["p0"] * 10


@pytest.mark.parametrize("priority", [10, -1, "9", 1.5])
def test_bad_priority_is_refused_before_sending(tw: Any, priority: Any,
                                                redis_client: redis.Redis) -> None:
    with pytest.raises(InvalidInput, match="priority"):
        tw.submit("tests.record", ["x"], queue="priority", priority=priority)
    assert written_keys(redis_client) == []


def test_unknown_task_and_queue_are_refused(tw: Any, redis_client: redis.Redis) -> None:
    with pytest.raises(InvalidInput, match="task"):
        tw.submit("no.such.task")
    with pytest.raises(InvalidInput, match="queue"):
        tw.submit("tests.record", ["x"], queue="nosuch")
    assert written_keys(redis_client) == []
