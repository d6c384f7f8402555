"""A workflow step runs through its step task's own chain (workflows/step_runtime.py):
its retries and its end are journaled under the step task's name, a step that fails
for good is a dead letter (with its severity) whose replay resumes the run, and a retry
Celery cannot publish (the broker full) is requeued, not lost with its run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import select

from taskworks.runtime.dlq import DeadLetterFilter
from taskworks.runtime.retry import RetryPolicy
from taskworks.store.tables import JournalEntry
from taskworks.workflows import Step
from tests.support.wait import wait_for
from tests.workflows.conftest import rec, workflow


def _journal(tw: Any, task_id: str) -> list[tuple[str, str, int]]:
    with tw.store.session() as session:
        return [(r.name, r.state, r.attempt) for r in session.scalars(
            select(JournalEntry).where(JournalEntry.task_id == task_id)
            .order_by(JournalEntry.id))]


def test_a_failed_step_is_journaled_dead_lettered_and_its_replay_resumes_the_run(
    tw: Any, redis_client: redis.Redis, worker: Any,
) -> None:
    redis_client.set("wf:broken", 1)
    step = Step("flaky", "wf.fail", params={"label": "flaky", "switch": "wf:broken"},
                retries=RetryPolicy(max_retries=1, base_delay=0.05, jitter=False))
    wf = tw.workflows.register(workflow("dlq", step, rec("after", "flaky")))
    run = tw.workflows.start(wf.name)
    status = run.wait(timeout=30)
    assert status.state == "FAILED"
    task_id = status.steps["flaky"].task_id
    # the step task's chain, not the wrapper's: a retry, then the failure, both its own
    assert wait_for(lambda: len(rows := _journal(tw, task_id)) >= 2 and rows) == [
        ("wf.fail", "retry", 1), ("wf.fail", "failure", 2)]
    # (other workflow tests leave letters of wf.fail in the session's store)
    [letter] = wait_for(lambda: [x for x in tw.dead_letters.find(DeadLetterFilter(
        task="wf.fail"), limit=1000) if x.task_id == task_id], what="the step's dead letter")
    assert (letter.task_id, letter.reason, letter.attempts, letter.exc_type) == (
        task_id, "max_retries", 2, "ConnectionError")
    assert letter.severity is not None

    redis_client.delete("wf:broken")  # the downstream is fixed: replay the letter
    assert tw.dead_letters.replay([letter.id]) == {letter.id: run.id}
    status = wait_for(lambda: (s := run.status()).done and s, timeout=30,
                      what="the resumed run to end")
    assert status.state == "SUCCEEDED"
    assert [str(x) for x in redis_client.lrange("wf:order", 0, -1)] == ["flaky", "after"]
    assert tw.dead_letters.get(letter.id).replay_task_id == run.id


def test_a_step_task_s_idempotency_holds_inside_workflows(
    tw: Any, redis_client: redis.Redis, worker: Any,
) -> None:
    """Two runs with the same input call an idempotent step task once: the second is
    answered from the stored result (before, steps bypassed idempotency)."""
    wf = tw.workflows.register(workflow("idem", Step("once", "wf.idempotent_add",
                                                     params={"amount": 5})))
    first = tw.workflows.start(wf.name, {"x": 1}).wait(timeout=30)
    second = tw.workflows.start(wf.name, {"x": 1}).wait(timeout=30)
    assert (first.state, second.state) == ("SUCCEEDED", "SUCCEEDED")
    assert first.steps["once"].result == second.steps["once"].result == 6
    assert redis_client.get("wf:idempotent_add:calls") == "1"


@pytest.fixture
def refill_broker(redis_client: redis.Redis) -> Iterator[None]:
    yield
    redis_client.config_set("maxmemory", 0)


def test_a_step_retry_the_full_broker_refuses_is_requeued_and_the_run_ends(
    tw: Any, redis_client: redis.Redis, start_worker: Any, refill_broker: None,
) -> None:
    start_worker(["default"], env={"TASKWORKS_VISIBILITY_TIMEOUT": "4"})
    step = Step("fails_once", "wf.fail_when_full", params={"label": "w"},
                retries=RetryPolicy(max_retries=3, base_delay=0.05, jitter=False))
    wf = tw.workflows.register(workflow("full", step, rec("after", "fails_once")))
    run = tw.workflows.start(wf.name)
    wait_for(lambda: redis_client.get("wf:full:started") == "1", what="the step to start")
    redis_client.config_set("maxmemory-policy", "noeviction")
    redis_client.config_set("maxmemory", 1)  # the step fails now; its retry is refused
    time.sleep(3)
    redis_client.config_set("maxmemory", 0)
    status = run.wait(timeout=60)
    assert status.state == "SUCCEEDED", status
    assert [str(x) for x in redis_client.lrange("wf:order", 0, -1)] == ["after"]
