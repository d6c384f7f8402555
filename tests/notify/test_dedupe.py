"""The dedupe window against the real Valkey."""

from __future__ import annotations

import threading
import time
from typing import cast

import pytest
import redis

from taskworks.errors import InvalidInput
from taskworks.notify.dedupe import Deduper


def test_one_send_per_window_then_the_count_of_the_suppressed(
        redis_client: redis.Redis) -> None:
    deduper = Deduper(redis_client, window_seconds=1)
    assert [deduper.admit("tasks.a", "ValueError") for _ in range(5)] == [1, None, None,
                                                                          None, None]
    time.sleep(1.2)
    assert deduper.admit("tasks.a", "ValueError") == 5  # itself + the 4 suppressed
    assert deduper.admit("tasks.a", "ValueError") is None
    time.sleep(1.2)
    assert deduper.admit("tasks.a", "ValueError") == 2
    time.sleep(1.2)
    assert deduper.admit("tasks.a", "ValueError") == 1  # nothing suppressed since


def test_task_and_exception_type_are_independent(redis_client: redis.Redis) -> None:
    deduper = Deduper(redis_client, window_seconds=60)
    assert deduper.admit("tasks.a", "ValueError") == 1
    assert deduper.admit("tasks.a", "KeyError") == 1
    assert deduper.admit("tasks.b", "ValueError") == 1
    # a separator, not concatenation: ("ab", "c") is not ("a", "bc")
    assert deduper.admit("tasks.aValue", "Error") == 1
    assert deduper.admit("tasks.a", "ValueError") is None
    assert deduper.admit("tasks.a", "KeyError") is None


def test_keys_are_namespaced_and_expire(redis_client: redis.Redis) -> None:
    deduper = Deduper(redis_client, window_seconds=60, carry_seconds=100)
    deduper.admit("tasks.a", "ValueError")
    deduper.admit("tasks.a", "ValueError")
    found = sorted(cast(list[str], redis_client.keys("*")))  # decode_responses
    assert len(found) == 2
    assert all(key.startswith("taskworks:notify:") for key in found)
    ttls = sorted(redis_client.ttl(key) for key in found)
    assert 0 < ttls[0] <= 60
    assert 60 < ttls[1] <= 160  # the count outlives its window, for the next send


def test_concurrent_failures_send_once(redis_client: redis.Redis) -> None:
    deduper = Deduper(redis_client, window_seconds=60)
    start = threading.Barrier(8)
    results: list[int | None] = []
    lock = threading.Lock()

    def fail() -> None:
        start.wait()
        admitted = deduper.admit("tasks.a", "ValueError")
        with lock:
            results.append(admitted)

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(results, key=lambda r: r is None) == [1] + [None] * 7


@pytest.mark.parametrize("window", [0, -1, True])
def test_window_must_be_positive(redis_client: redis.Redis, window: int) -> None:
    with pytest.raises(InvalidInput, match="window_seconds"):
        Deduper(redis_client, window_seconds=window)
