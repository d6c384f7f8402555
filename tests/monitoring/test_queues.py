"""Queue depth counts every priority level and the messages workers hold unacknowledged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from taskworks.monitoring.queues import QueueDepth, queue_depths
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess


def test_waiting_messages_of_every_priority_level_are_counted(
        tw: Any, redis_client: redis.Redis) -> None:
    for priority in (0, 5, 9):
        tw.submit("tests.echo", [priority], queue="io_intensive", priority=priority)
    depths = queue_depths(redis_client, ["io_intensive", "default"])
    assert depths == {"io_intensive": QueueDepth(waiting=3, unacked=0),
                      "default": QueueDepth(waiting=0, unacked=0)}


def test_a_running_task_is_backlog_even_though_its_list_is_empty(
        tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker(["io_intensive"])
    tw.submit("tests.slow_mark", ["depth", 3.0], queue="io_intensive")
    wait_for(lambda: redis_client.get("depth:runs") == "1", what="the task to start")
    tw.submit("tests.echo", [1], queue="io_intensive", priority=9)
    depth = queue_depths(redis_client, ["io_intensive"])["io_intensive"]
    assert depth.unacked >= 1  # the running task (and a prefetched one, if any)
    assert depth.backlog == 2
