"""Cluster-wide rate limits: parsing, the GCRA bucket in Redis, and real workers held to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from sqlalchemy import select

from taskworks.errors import InvalidInput
from taskworks.resilience.ratelimit import Rate, RateLimitMiddleware, RateLimits
from taskworks.store.tables import JournalEntry
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess


@pytest.mark.parametrize(("text", "count", "period"), [
    ("50/s", 50, 1), ("100/m", 100, 60), (" 1000 / h ", 1000, 3600), ("0.5/s", 0.5, 1),
])
def test_rates_parse(text: str, count: float, period: float) -> None:
    rate = Rate.parse(text)
    assert (rate.count, rate.period) == (count, period)


@pytest.mark.parametrize("text", ["50", "50/d", "/s", "0/s", "-1/s", "fast", 50, None])
def test_bad_rates_name_the_field_and_the_format(text: Any) -> None:
    with pytest.raises(InvalidInput, match=r'rate_limit: got .* expected a rate like "50/s"'):
        Rate.parse(text)


def test_a_named_limit_cannot_be_redefined_with_another_rate() -> None:
    limits = RateLimits()
    limits.define("api", "5/s")
    limits.define("api", "5/s")  # the same definition again is harmless
    with pytest.raises(InvalidInput, match="api"):
        limits.define("api", "6/s")
    with pytest.raises(InvalidInput, match="rate_limit_name"):
        limits.define("bad name!", "6/s")


def test_our_rate_limit_is_not_celerys_per_worker_one(tw: Any) -> None:
    task = tw.app.tasks["tests.limited"]
    assert task.rate_limit is None  # Celery's per-worker limiter stays off
    assert task.taskworks_options["rate_limit"] == "50/s"


def test_declaration_checks_rate_and_names(tw: Any) -> None:
    with pytest.raises(InvalidInput, match="rate_limit"):
        tw.task(name="tests.bad_rate", rate_limit="lots")(lambda: None)
    with pytest.raises(InvalidInput, match="rate_limit_name"):
        tw.task(name="tests.bad_name", rate_limit_name="never-defined")(lambda: None)


def test_over_the_limit_callers_reserve_successive_slots(broker_url: str,
                                                         redis_client: redis.Redis) -> None:
    limiter = RateLimitMiddleware(broker_url, horizon=0.35)
    rate = Rate.parse("10/s")  # one admission every 100 ms
    waits = [limiter.admit("unit", rate, f"t{i}") for i in range(5)]
    assert waits[0] == 0
    # each caller over the limit gets the next slot: ~100, ~200, ~300 ms ahead
    for i, wait in enumerate(waits[1:4], start=1):
        assert i * 0.1 - 0.05 < wait <= i * 0.1
    # beyond the horizon nothing is reserved: it will ask again
    assert waits[4] > 0.35
    assert redis_client.exists("taskworks:ratelimit:{unit}:reserved:t4") == 0
    # asking again before its slot: the same reservation, the time left
    again = limiter.admit("unit", rate, "t3")
    assert 0 < again <= waits[3]
    wait_for(lambda: limiter.admit("unit", rate, "t1") == 0, what="t1's slot", interval=0.02)


def admissions(client: redis.Redis, key: str, count: int) -> list[float]:
    wait_for(lambda: client.llen(f"{key}:admitted") >= count, timeout=60, interval=0.2,
             what=f"{count} admissions")
    return sorted(float(x) for x in client.lrange(f"{key}:admitted", 0, -1))


def test_fifty_per_second_holds_within_ten_percent_across_four_processes(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker(pool="prefork", concurrency=2)
    start_worker(pool="prefork", concurrency=2)
    total = 350
    for _ in range(total):
        tw.submit("tests.limited", ["rl"])
    times = admissions(redis_client, "rl", total)
    # the admitted count over a 4 s window of steady state: the first seconds go to the
    # 2 cores taking in 350 messages, the last half second to the queue running dry
    end = times[-1] - 0.5
    admitted = sum(1 for t in times if end - 4.0 <= t < end)
    assert 180 <= admitted <= 220, admitted
    assert len(times) == total  # deferred, never failed nor lost


def test_a_named_limit_is_shared_by_several_tasks(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker(pool="threads", concurrency=4)
    for _ in range(15):
        tw.submit("tests.shared_a", ["shared"])
        tw.submit("tests.shared_b", ["shared"])
    times = admissions(redis_client, "shared", 30)
    # 10/s for both tasks together: 30 admissions need at least 2.9 s
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate <= 11, rate

    def deferrals() -> list[JournalEntry]:
        with tw.store.session() as session:
            return list(session.scalars(select(JournalEntry).where(
                JournalEntry.name == "tests.shared_b", JournalEntry.state == "deferred")))

    # the journal says why tasks waited (rows are written in batches: wait for them)
    rows = wait_for(deferrals, what="deferred rows in the journal")
    assert {r.exc_type for r in rows} == {"RateLimited"}
    assert "rate limit 'tests-shared-api' reached" in (rows[0].exc_message or "")
