"""The task option ``breaker=``, with real workers: deferral without spending retries,
state that outlives the worker, the outcome reported to the breaker."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from sqlalchemy import select

from taskworks import keys
from taskworks.errors import BreakerOpen, InvalidInput
from taskworks.resilience.breaker import BreakerState
from taskworks.store.tables import JournalEntry
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess

NAME = "tests.guarded"


def attempts(tw: Any, task_id: str, until: Callable[[list[JournalEntry]], bool]) -> Any:
    def rows() -> list[JournalEntry] | None:
        with tw.store.session() as session:
            found = list(session.scalars(select(JournalEntry).where(
                JournalEntry.task_id == task_id).order_by(JournalEntry.id)))
        return found if until(found) else None

    return wait_for(rows, timeout=30, interval=0.1, what=f"journal rows of {task_id}")


def open_breaker(tw: Any) -> None:
    breaker = tw.breakers.get(NAME)
    for _ in range(breaker.config.failure_threshold):
        with pytest.raises(ConnectionError):
            breaker.call(_down)
    assert breaker.status().state is BreakerState.OPEN


def _down() -> None:
    raise ConnectionError("down")


def test_open_breaker_defers_the_task_without_spending_retries(
        tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker()
    open_breaker(tw)  # after the worker is up: reset_timeout is 2 s
    result = tw.submit(NAME, ["k"])  # retry_policy max_retries=0: one spent retry would fail it
    assert result.get(timeout=30) == 1
    assert redis_client.get("k:runs") == "1"  # deferred runs never touched the body
    rows = attempts(tw, result.id, lambda r: bool(r) and r[-1].state == "success")
    states = [r.state for r in rows]
    assert states[-1] == "success"
    assert set(states[:-1]) == {"deferred"}
    assert rows[-1].attempt == 1
    assert rows[0].exc_type == "BreakerOpen"
    assert "is open" in rows[0].exc_message
    status = tw.breakers.show(NAME, recent=3)
    assert status.state is BreakerState.CLOSED  # the task was the probe, and it succeeded
    assert [(t.from_state, t.to_state) for t in status.recent] == [
        ("half_open", "closed"), ("open", "half_open"), ("closed", "open")]


def test_failures_open_the_breaker_and_the_state_outlives_the_worker(
        tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    name = "tests.guarded_long"  # reset_timeout 5 s: longer than a worker restart, usually
    first = start_worker()
    redis_client.set("s:fail", 1)
    for _ in range(2):  # failure_threshold=2, reported by the worker
        with pytest.raises(ConnectionError):
            tw.submit(name, ["s"]).get(timeout=30)
    assert tw.breakers.show(name).state is BreakerState.OPEN
    open_until = int(redis_client.hget(keys.breaker(name), "open_until")) / 1000
    first.kill()  # SIGKILL: nothing of the breaker lived in the worker
    start_worker()
    redis_client.delete("s:fail")  # the downstream recovers, but the breaker does not know
    submitted = time.time()
    result = tw.submit(name, ["s"])
    assert result.get(timeout=30) == 3  # ran once, as the probe, and closed the breaker
    ran_at = float(redis_client.lindex("s:at", -1))
    # the new worker honoured the old worker's decision: no run before the breaker allowed
    assert ran_at >= open_until - 0.05
    assert tw.breakers.show(name).state is BreakerState.CLOSED
    if submitted < open_until - 1:  # the usual case; a very slow restart leaves no deferral
        rows = attempts(tw, result.id, lambda r: bool(r) and r[-1].state == "success")
        assert rows[0].state == "deferred"


def test_breaker_option_is_checked_at_declaration(tw: Any) -> None:
    with pytest.raises(InvalidInput, match="breaker"):
        tw.task(name="tests.bad_breaker", breaker=42)(lambda: None)
    with pytest.raises(InvalidInput, match="breaker"):
        tw.task(name="tests.bad_breaker", breaker="no spaces allowed")(lambda: None)


def test_breaker_open_survives_celery_json(tw: Any) -> None:
    """A deferred task's RETRY state carries BreakerOpen through the result backend."""
    from celery.backends.base import Backend

    backend = Backend(tw.app)
    exc = backend.exception_to_python(backend.prepare_exception(BreakerOpen("x", 2.5), "json"))
    assert isinstance(exc, BreakerOpen)
    assert (exc.name, exc.retry_after) == ("x", 2.5)
