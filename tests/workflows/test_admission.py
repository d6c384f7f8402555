"""A step task's own breaker and rate limit hold inside workflows (workflows/admission.py):
the engine calls the step's body in-process, and must still ask its breaker and its rate
limit first, and report the outcome to the breaker."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from taskworks.resilience.breaker import BreakerState
from taskworks.runtime.retry import RetryPolicy
from taskworks.workflows import OnFailure, Step
from tests.support.wait import wait_for
from tests.workflows.conftest import workflow

BREAKER = "wf.downstream"


def guarded(name: str, *deps: str, **kwargs: Any) -> Step:
    return Step(name, "wf.guarded", params={"label": name}, depends_on=tuple(deps), **kwargs)


@pytest.fixture(autouse=True)
def closed_breaker(tw: Any) -> Any:
    tw.breakers.get(BREAKER).reset("test start")
    yield
    tw.breakers.get(BREAKER).reset("test end")


def test_failing_steps_open_the_step_tasks_breaker_and_later_steps_wait_for_it(
        tw: Any, redis_client: redis.Redis, worker: Any) -> None:
    redis_client.set("wf:order:down", 1)
    wf = tw.workflows.register(workflow(
        "breaker", guarded("a", on_failure=OnFailure.CONTINUE),
        guarded("b", on_failure=OnFailure.CONTINUE), guarded("c", "a", "b", run_if_failed=True)))
    run = tw.workflows.start(wf.name)
    # a and b fail and their failures reach the breaker (threshold 2): it opens
    breaker = tw.breakers.get(BREAKER)
    wait_for(lambda: breaker.status().state is BreakerState.OPEN, timeout=30,
             what="the breaker to open on the steps' failures")
    # c is not run while it is open: deferred back to QUEUED, its try given back
    step = wait_for(lambda: (s := tw.workflows.status(run.id).steps["c"]).error
                    and "BreakerOpen" in s.error and s, timeout=30, what="c deferred")
    assert step.state == "QUEUED"
    assert step.tries == 0
    assert sorted(str(x) for x in redis_client.lrange("wf:order:attempts", 0, -1)) == ["a", "b"]

    redis_client.delete("wf:order:down")
    breaker.reset("downstream back")
    status = run.wait(timeout=60)  # the deferred message comes back and c runs once
    assert status.steps["c"].state == "SUCCEEDED"
    assert status.steps["c"].tries == 1
    assert [str(x) for x in redis_client.lrange("wf:order", 0, -1)] == ["c"]


def test_a_successful_step_is_reported_to_its_breaker(
        tw: Any, redis_client: redis.Redis, worker: Any) -> None:
    breaker = tw.breakers.get(BREAKER)
    before = breaker.status()
    wf = tw.workflows.register(workflow("breaker-ok", guarded("only")))
    assert tw.workflows.start(wf.name).wait(timeout=30).state == "SUCCEEDED"
    after = breaker.status()
    assert after.state is BreakerState.CLOSED
    assert after.successes == before.successes + 1


def test_a_spent_rate_limit_defers_the_step_without_spending_its_retries(
        tw: Any, redis_client: redis.Redis, worker: Any) -> None:
    steps = [Step(f"s{i}", "wf.limited", params={"label": f"s{i}"},
                  retries=RetryPolicy(max_retries=0)) for i in range(3)]
    run = tw.workflows.start(tw.workflows.register(workflow("limited", *steps)).name)
    # 2/m, bursts of 1: one step runs now, the others are deferred (QUEUED, not failed)
    wait_for(lambda: redis_client.llen("wf:order") == 1, timeout=30, what="one step run")
    waiting = wait_for(lambda: (found := [s for s in tw.workflows.status(run.id).steps.values()
                                          if s.error and "RateLimited" in s.error])
                       and len(found) == 2 and found, timeout=30, what="two steps deferred")
    assert {s.state for s in waiting} == {"QUEUED"}
    assert {s.tries for s in waiting} == {0}
    assert redis_client.llen("wf:order") == 1
    run.cancel()
