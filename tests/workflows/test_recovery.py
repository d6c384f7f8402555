"""The recovery sweep: a publisher that died between commit and publish, run deadlines."""

from __future__ import annotations

from typing import Any

import redis

from taskworks.workflows import Step
from tests.support.wait import wait_for
from tests.workflows.conftest import rec, workflow


def test_sweep_publishes_steps_whose_publisher_died(tw: Any, redis_client: redis.Redis,
                                                    worker: Any) -> None:
    wf = tw.workflows.register(workflow("lost", rec("a"), rec("b", "a")))
    # what start() does, minus the publish: as if the process died right after commit
    run_id, lost = tw.workflows.engine.runs.create_run(wf, None)
    assert tw.workflows.status(run_id).steps["a"].state == "QUEUED"
    assert tw.workflows.engine.sweep(grace=30)["republished"] == 0  # too recent to judge
    assert tw.workflows.engine.sweep(grace=0)["republished"] == 1
    status = tw.workflows.run(run_id).wait(timeout=30)
    assert status.state == "SUCCEEDED"
    assert [str(x) for x in redis_client.lrange("wf:order", 0, -1)] == ["a", "b"]
    # the message that never went out would carry the old token: it could not run "a"
    runs = tw.workflows.engine.runs
    assert runs.start_step(run_id, "a", lost[0].token, redelivered=True, celery_id=None) is None
    assert tw.workflows.engine.sweep(grace=0)["republished"] == 0


def test_sweep_fails_runs_past_their_deadline(tw: Any, redis_client: redis.Redis,
                                              worker: Any) -> None:
    wf = tw.workflows.register(workflow("deadline", rec("a", sleep=3), rec("b", "a"),
                                        timeout=0.2))
    run = tw.workflows.start(wf.name)
    wait_for(lambda: redis_client.llen("wf:order:started") == 1, what="a to start")
    wait_for(lambda: tw.workflows.recover()["timed_out"] == 1, what="the sweep to time out")
    status = run.status()
    assert status.state == "FAILED"
    assert status.error == "run timed out"
    assert {n: s.state for n, s in status.steps.items()} == {"a": "CANCELLED",
                                                            "b": "CANCELLED"}


def test_the_sweep_is_on_the_beat_schedule(tw: Any) -> None:
    entries = [e for e in tw.app.conf.beat_schedule.values()
               if e["task"] == "taskworks.workflows.sweep"]
    assert len(entries) == 1
    assert entries[0]["schedule"].total_seconds() == 30
    assert tw.app.tasks["taskworks.workflows.sweep"].queue == "scheduled"


def test_sweep_fails_a_step_killed_by_its_hard_time_limit(
        tw: Any, redis_client: redis.Redis, start_worker: Any) -> None:
    start_worker(["default"], pool="prefork", concurrency=1)
    wf = tw.workflows.register(workflow(
        "limit", Step("slow", "wf.record", params={"label": "slow", "sleep": 20}, timeout=1.0),
        rec("after", "slow")))
    run = tw.workflows.start(wf.name)
    wait_for(lambda: redis_client.llen("wf:order:started") == 1, what="slow to start")
    # Celery kills the pool process after 1 s; nothing reports the step's end but the sweep
    wait_for(lambda: tw.workflows.engine.sweep(time_limit_grace=0.5)["overdue"] == 1,
             timeout=30, interval=0.3, what="the sweep to fail the step")
    status = run.status()
    assert status.state == "FAILED"
    assert status.failed_step == "slow"
    assert "time limit of 1.0s" in (status.error or "")
    assert status.steps["after"].state == "SKIPPED"  # downstream of the failure
