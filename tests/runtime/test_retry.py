"""Retry policies: backoff and jitter, never_retry, exhaustion, redelivery counting, budget."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from taskworks.errors import InvalidInput
from taskworks.runtime.retry import RetryPolicy
from taskworks.store.tables import DeadLetter
from tests.runtime.conftest import count
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess


def test_backoff_sequence_doubles_up_to_max_delay() -> None:
    policy = RetryPolicy(base_delay=1, backoff_factor=2, max_delay=10, jitter=False)
    assert [policy.delay(n) for n in range(6)] == [1, 2, 4, 8, 10, 10]


@given(retries_done=st.integers(0, 30), seed=st.integers(0, 2**32),
       base=st.floats(0.01, 100), factor=st.floats(1, 4))
def test_jitter_adds_10_to_30_percent_and_never_passes_max(
        retries_done: int, seed: int, base: float, factor: float) -> None:
    policy = RetryPolicy(base_delay=base, backoff_factor=factor, max_delay=1000)
    plain = policy.base(retries_done)
    delay = policy.delay(retries_done, random.Random(seed))
    assert delay <= 1000
    assert min(1000, plain * 1.1) - 1e-9 <= delay <= min(1000, plain * 1.3) + 1e-9


def test_never_retry_beats_retry_on() -> None:
    policy = RetryPolicy(retry_on=(Exception,))
    assert policy.retryable(ConnectionError())
    assert not policy.retryable(TypeError())
    assert not policy.retryable(AttributeError())
    assert not RetryPolicy(retry_on=(ConnectionError,)).retryable(ValueError())


@pytest.mark.parametrize(("field", "kwargs"), [
    ("max_retries", {"max_retries": -1}), ("backoff_factor", {"backoff_factor": 0.5}),
    ("max_delay", {"base_delay": 10, "max_delay": 1}),
])
def test_bad_policy_is_refused(field: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match=field):
        RetryPolicy(**kwargs)


def test_retries_then_succeeds_with_every_attempt_journaled(
    tw: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess], journal_rows: Callable[..., Any],
) -> None:
    start_worker()
    result = tw.submit("tests.flaky", ["f", 2])
    assert result.get(timeout=30) == 3
    rows = journal_rows(3, "tests.flaky")
    assert [(r.state, r.attempt) for r in rows] == [("retry", 1), ("retry", 2), ("success", 3)]
    assert {r.task_id for r in rows} == {result.id}
    assert rows[0].exc_type == "ConnectionError"
    assert rows[0].severity == "medium"
    assert count(store, DeadLetter) == 0


def test_exhausted_retries_end_in_the_dead_letter_store(
    tw: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess], journal_rows: Callable[..., Any],
) -> None:
    start_worker()
    result = tw.submit("tests.always_fails", ["a"])
    with pytest.raises(ConnectionError):
        result.get(timeout=30)
    rows = journal_rows(3, "tests.always_fails")
    assert [r.state for r in rows] == ["retry", "retry", "failure"]
    letters = tw.dead_letters.find()
    assert len(letters) == 1
    assert (letters[0].task_id, letters[0].attempts, letters[0].reason) == (
        result.id, 3, "max_retries")
    assert letters[0].args == ["a"]
    assert redis_client.get("a:runs") == "3"


def test_never_retry_error_fails_at_once(
    tw: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess], journal_rows: Callable[..., Any],
) -> None:
    start_worker()
    result = tw.submit("tests.always_fails", ["t", "TypeError"])
    with pytest.raises(TypeError):
        result.get(timeout=30)
    rows = journal_rows(1, "tests.always_fails")
    assert [(r.state, r.exc_type) for r in rows] == [("failure", "TypeError")]
    assert redis_client.get("t:runs") == "1"
    assert tw.dead_letters.find()[0].reason == "not_retryable"


def test_a_message_that_kills_its_worker_ends_in_the_dlq_instead_of_looping(
    tw: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess], journal_rows: Callable[..., Any],
) -> None:
    # prefork: the parent sees the child die and requeues the message (redelivered)
    start_worker(pool="prefork", concurrency=1)
    result = tw.submit("tests.kills_its_process", ["k"])
    letters = wait_for(lambda: tw.dead_letters.find(), timeout=60, what="the dead letter")
    # max_retries=1: two deliveries ran (and died), the third was refused unrun
    assert redis_client.get("k:runs") == "2"
    assert (letters[0].task_id, letters[0].reason, letters[0].attempts) == (
        result.id, "redelivery_limit", 3)
    rows = journal_rows(1, "tests.kills_its_process")
    assert [(r.state, r.exc_type, r.attempt) for r in rows] == [
        ("failure", "RedeliveryLimitExceeded", 3)]
    with pytest.raises(Exception, match="delivered 3 times"):
        result.get(timeout=10)


def test_retry_budget_stops_a_retry_storm(
    tw: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess], journal_rows: Callable[..., Any],
) -> None:
    start_worker()
    results = [tw.submit("tests.budgeted", [f"b{i}"]) for i in range(5)]
    for result in results:
        with pytest.raises(ConnectionError):
            result.get(timeout=30)
    rows = journal_rows(7, "tests.budgeted")
    # budget 2 per minute: two retries were admitted in all, every task ended dead-lettered
    assert sum(r.state == "retry" for r in rows) == 2
    assert sum(r.state == "failure" for r in rows) == 5
    letters = tw.dead_letters.find()
    assert len(letters) == 5
    assert {letter.reason for letter in letters} == {"retry_budget"}


@pytest.mark.parametrize("factor", [2, 2.0, 1e300])
def test_huge_exponents_stay_at_max_delay(factor: float) -> None:
    policy = RetryPolicy(max_retries=5000, base_delay=1, backoff_factor=factor, max_delay=60,
                         jitter=False)
    assert policy.delay(4999) == 60.0
