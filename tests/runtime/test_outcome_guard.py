"""A journal row durable before the task returns; the guard against running an ended task
again (tests/soak/ drives both under SIGKILLs; these pin each rule down alone)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from celery.exceptions import Ignore

from taskworks.runtime import journal
from taskworks.runtime.dlq import DeadLetterFilter
from taskworks.runtime.middleware import TaskContext


def _row(task_id: str, state: str = "success") -> dict[str, Any]:
    return {"task_id": task_id, "name": "tests.echo", "queue": "default", "state": state,
            "attempt": 1, "args": [1], "kwargs": {}, "result": "1", "exc_type": None,
            "exc_message": None, "traceback": None, "severity": None, "hostname": None,
            "pid": None, "started_at": None, "finished_at": datetime.now(UTC),
            "duration_ms": None}


def test_wait_written_writes_the_row_with_every_row_buffered_before_it(store: Any) -> None:
    writer = journal.JournalWriter(store, batch_size=100_000, flush_interval=600)
    numbers = [writer.add(_row(f"w-{i}")) for i in range(5)]
    assert journal.counts_by_state(store, "tests.echo") == {}
    assert writer.wait_written(numbers[2])
    assert journal.counts_by_state(store, "tests.echo") == {"success": 5}  # one INSERT
    assert writer.wait_written(numbers[4])
    assert journal.counts_by_state(store, "tests.echo") == {"success": 5}
    writer.close()


def _run(tw: Any, task_id: str, *, redelivered: bool, retries: int = 0) -> list[int]:
    """Run tests.flaky (3 retries) through the runtime as a worker would, for one
    delivered message; returns the arguments its body saw (empty: it did not run)."""
    task = tw.app.tasks["tests.flaky"]
    ran: list[int] = []
    task.push_request(id=task_id, retries=retries, hostname="guard@test",
                      delivery_info={"routing_key": "default", "redelivered": redelivered})
    try:
        tw.runtime.execute(task, (7,), {}, lambda i: ran.append(i) or i)
    finally:
        task.pop_request()
    return ran


def test_a_redelivered_task_with_a_success_row_does_not_run_again(
    tw: Any, store: Any, redis_client: Any
) -> None:
    assert _run(tw, "guard-1", redelivered=False) == [7]
    assert [r.state for r in journal.attempts(store, "guard-1")] == ["success"]
    with pytest.raises(Ignore):  # Celery acknowledges an ignored message
        _run(tw, "guard-1", redelivered=True)
    with pytest.raises(Ignore):  # a second copy left by a retry published before a kill
        _run(tw, "guard-1", redelivered=False, retries=1)
    assert [r.state for r in journal.attempts(store, "guard-1")] == ["success"]
    # a first delivery is never looked up, and a redelivery with no outcome runs
    assert _run(tw, "guard-2", redelivered=True) == [7]


def test_a_dead_letter_without_its_failure_row_gets_it_and_does_not_run_again(
    tw: Any, store: Any, redis_client: Any
) -> None:
    ctx = TaskContext(task=tw.app.tasks["tests.flaky"], task_id="guard-3", name="tests.flaky",
                      queue="default", args=(7,), kwargs={"password": "p"}, attempt=4,
                      options={}, hostname=None, exc=ConnectionError("down"),
                      severity="medium", exhausted_reason="max_retries")
    tw.dead_letters.add(ctx)  # the worker died before writing the journal row
    with pytest.raises(Ignore):
        _run(tw, "guard-3", redelivered=True)
    [row] = journal.attempts(store, "guard-3")
    assert (row.state, row.attempt, row.exc_type, row.kwargs) == (
        "failure", 4, "ConnectionError", {"password": "***"})
    assert len(tw.dead_letters.find(DeadLetterFilter(task="tests.flaky"))) == 1


def test_every_task_is_looked_up_when_reserved_messages_may_outlive_the_visibility(
    tw: Any, store: Any, redis_client: Any
) -> None:
    """A prefetched original waits while the broker hands its copy to another worker: the
    original is not marked redelivered, so with a short visibility timeout every task
    is looked up."""
    rule = journal.OutcomeGuard.reserved_may_outlive_visibility

    def conf(visibility: int, prefetch: int, limit: float) -> Any:
        return SimpleNamespace(broker_transport_options={"visibility_timeout": visibility},
                               worker_prefetch_multiplier=prefetch, task_time_limit=limit)

    assert rule(conf(7200, 1, 1800)) is False      # the cpu and priority groups
    assert rule(conf(7200, 4, 1800)) is True       # the general group: 5 x 1800 > 7200
    assert rule(conf(5, 1, 1800)) is True
    assert rule(SimpleNamespace(broker_transport_options={}, worker_prefetch_multiplier=1,
                                task_time_limit=1800)) is False

    guard = tw.runtime.get(journal.OutcomeGuard)
    options = tw.app.conf.broker_transport_options
    tw.app.conf.broker_transport_options = {**options, "visibility_timeout": 5}
    guard._every_task = None  # the app is the session's: decide again, then restore
    try:
        assert _run(tw, "guard-4", redelivered=False) == [7]
        with pytest.raises(Ignore):  # a first delivery, yet it already has its success
            _run(tw, "guard-4", redelivered=False)
    finally:
        tw.app.conf.broker_transport_options = options
        guard._every_task = None
