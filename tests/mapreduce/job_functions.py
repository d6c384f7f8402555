"""A custom map-reduce function the tests' workers know (registered by tests/apps/sample.py).

``tests.slow_sum`` sums the field ``v``; every execution of a partition is counted in
Redis (``<key>:runs:<first item_index>``), a partition fails while ``<key>:fail:<first>``
exists, each partition sleeps ``sleep`` seconds and then waits while ``<key>:hold:<first>``
exists, so a test can kill, cancel or fail a job half-way and see which partitions ran
again, or look at a job while a partition runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis

from taskworks import Taskworks


def register(tw: Taskworks) -> None:
    def slow_map(params: Mapping[str, Any], items: Iterable[tuple[int, Any]]) -> dict[str, int]:
        client = redis.Redis.from_url(tw.settings.effective_broker_url)
        total = count = 0
        first = -1
        for index, data in items:
            first = index if first < 0 else first
            total += data["v"]
            count += 1
        key = params["key"]
        client.incr(f"{key}:runs:{first}")
        if client.exists(f"{key}:fail:{first}"):
            raise RuntimeError(f"partition at {first} told to fail")
        time.sleep(float(params.get("sleep", 0)))
        while client.exists(f"{key}:hold:{first}"):  # a test holds it until it has looked
            time.sleep(0.02)
        return {"sum": total, "count": count}

    def total(params: Mapping[str, Any], partials: Sequence[Any]) -> dict[str, int]:
        return {"sum": sum(p["sum"] for p in partials),
                "count": sum(p["count"] for p in partials)}

    tw.jobs.functions.custom("tests.slow_sum", map=slow_map, reduce=total)
