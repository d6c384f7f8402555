"""Failures, retries, cancellation and resume, on real workers."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest
import redis

from taskworks.errors import InvalidInput
from taskworks.runtime.retry import RetryPolicy
from taskworks.workflows import OnFailure, Step
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess
from tests.workflows.conftest import POOL, rec, workflow


def lrange(redis_client: redis.Redis, key: str) -> list[str]:
    return [str(x) for x in redis_client.lrange(key, 0, -1)]


def failing(name: str, *deps: str, on_failure: OnFailure = OnFailure.FAIL_FAST,
            **params: Any) -> Step:
    return Step(name, "wf.fail", params={"label": name, **params}, depends_on=tuple(deps),
                on_failure=on_failure)


def test_step_retries_with_backoff_then_succeeds(tw: Any, redis_client: redis.Redis,
                                                 worker: Any) -> None:
    step = Step("flaky", "wf.fail", params={"label": "flaky", "times": 2},
                retries=RetryPolicy(max_retries=3, base_delay=0.05, jitter=False))
    wf = tw.workflows.register(workflow("retry", step, rec("after", "flaky")))
    status = tw.workflows.start(wf.name).wait(timeout=30)
    assert status.state == "SUCCEEDED"
    assert status.steps["flaky"].tries == 3
    assert lrange(redis_client, "wf:order:attempts") == ["flaky"] * 3
    assert lrange(redis_client, "wf:order") == ["flaky", "after"]


def test_fail_fast_cancels_the_rest(tw: Any, redis_client: redis.Redis, worker: Any) -> None:
    wf = tw.workflows.register(workflow(
        "fast", rec("root"), failing("bad", "root", after="wf:order:started"),
        rec("slow", "root", sleep=1.5), rec("after_slow", "slow"), rec("after_bad", "bad")))
    status = tw.workflows.start(wf.name).wait(timeout=30)
    assert status.state == "FAILED"
    assert status.failed_step == "bad"
    assert status.error == "ConnectionError: bad fails (run 1)"
    states = {n: s.state for n, s in status.steps.items()}
    assert states["bad"] == "FAILED"
    assert states["slow"] == "CANCELLED"  # running when bad failed: revoked
    assert states["after_slow"] == "CANCELLED"
    assert states["after_bad"] == "SKIPPED"
    # the slow step finishes its body, but nothing runs after it
    wait_for(lambda: "slow" in lrange(redis_client, "wf:order"), what="slow body to end")
    wait_for(lambda: tw.workflows.status(status.id).steps["slow"].state == "CANCELLED")
    assert "after_slow" not in lrange(redis_client, "wf:order")


def test_continue_lets_independent_branches_finish(tw: Any, redis_client: redis.Redis,
                                                   worker: Any) -> None:
    wf = tw.workflows.register(workflow(
        "cont", rec("root"), failing("bad", "root", on_failure=OnFailure.CONTINUE),
        rec("slow", "root", sleep=0.5), rec("after_slow", "slow"), rec("after_bad", "bad"),
        rec("after_after_bad", "after_bad")))
    status = tw.workflows.start(wf.name).wait(timeout=30)
    assert status.state == "FAILED"
    assert status.failed_step == "bad"
    assert "bad fails" in (status.error or "")
    states = {n: (s.state, s.skip_reason) for n, s in status.steps.items()}
    assert states == {
        "root": ("SUCCEEDED", None), "bad": ("FAILED", None), "slow": ("SUCCEEDED", None),
        "after_slow": ("SUCCEEDED", None), "after_bad": ("SKIPPED", "upstream_failed"),
        "after_after_bad": ("SKIPPED", "upstream_failed"),
    }


def test_a_join_over_failures_sees_only_what_succeeded(tw: Any, redis_client: redis.Redis,
                                                      worker: Any) -> None:
    wf = tw.workflows.register(workflow(
        "join-failures", rec("root"), failing("bad", "root", on_failure=OnFailure.CONTINUE),
        rec("good", "root"), rec("after_bad", "bad"),
        Step("report", "wf.record", params={"label": "report"},
             depends_on=("after_bad", "good"), run_if_failed=True)))
    status = tw.workflows.start(wf.name).wait(timeout=30)
    assert status.state == "FAILED"  # a step failed, even though the join ran
    states = {n: (s.state, s.skip_reason) for n, s in status.steps.items()}
    assert states["after_bad"] == ("SKIPPED", "upstream_failed")
    assert states["report"] == ("SUCCEEDED", None)
    assert status.steps["report"].result["deps"] == ["good"]  # only what succeeded
    assert lrange(redis_client, "wf:order")[-1] == "report"


def test_cancel_while_steps_run(tw: Any, redis_client: redis.Redis, worker: Any) -> None:
    wf = tw.workflows.register(workflow(
        "cancel", rec("a", sleep=1.5), rec("b", sleep=1.5), rec("c", "a", "b"), rec("d", "c")))
    run = tw.workflows.start(wf.name)
    wait_for(lambda: len(lrange(redis_client, "wf:order:started")) == 2, what="a and b start")
    status = run.cancel()
    assert status.state == "CANCELLED"
    assert {n: s.state for n, s in status.steps.items()} == dict.fromkeys("abcd", "CANCELLED")
    assert run.cancel().state == "CANCELLED"  # idempotent
    # both running bodies end; their completions arrive after the cancel and dispatch nothing
    wait_for(lambda: sorted(lrange(redis_client, "wf:order")) == ["a", "b"],
             what="the running bodies to end")
    wait_for(lambda: all(
        s.finished_at for s in tw.workflows.status(run.id).steps.values()))
    final = run.status()
    assert final.state == "CANCELLED"
    assert {n: s.state for n, s in final.steps.items()} == dict.fromkeys("abcd", "CANCELLED")
    assert "c" not in lrange(redis_client, "wf:order")
    # a cancel of a finished run changes nothing; an unknown id is a clear error
    assert run.cancel().state == "CANCELLED"
    with pytest.raises(InvalidInput, match="run_id"):
        tw.workflows.run("no-such-run")


def test_resume_reruns_only_what_did_not_succeed(tw: Any, redis_client: redis.Redis,
                                                 worker: Any) -> None:
    redis_client.set("wf:switch", 1)
    wf = tw.workflows.register(workflow(
        "resume", rec("a"), failing("b", "a", switch="wf:switch",
                                    on_failure=OnFailure.CONTINUE),
        rec("c", "b"), rec("d", "a"), rec("e", "c", "d")))
    run = tw.workflows.start(wf.name)
    status = run.wait(timeout=30)
    assert status.state == "FAILED"
    assert status.failed_step == "b"
    assert {n: s.state for n, s in status.steps.items()} == {
        "a": "SUCCEEDED", "b": "FAILED", "c": "SKIPPED", "d": "SUCCEEDED", "e": "SKIPPED"}
    redis_client.delete("wf:switch")
    run.retry()
    with pytest.raises(InvalidInput, match="FAILED or CANCELLED"):
        run.retry()  # it is running (or already succeeded): nothing to retry
    status = run.wait(timeout=30)
    assert status.state == "SUCCEEDED", status
    assert status.resumes == 1
    attempts = {n: s.attempt for n, s in status.steps.items()}
    assert attempts == {"a": 1, "b": 2, "c": 2, "d": 1, "e": 2}
    # a and d ran once in total, over both attempts
    ran = lrange(redis_client, "wf:order")
    assert ran.count("a") == 1
    assert ran.count("d") == 1
    assert ran.count("b") == 1
    assert ran.count("c") == 1
    assert ran.count("e") == 1
    with pytest.raises(InvalidInput, match="FAILED or CANCELLED"):
        run.retry()


def test_resume_after_fail_fast_and_after_cancel(tw: Any, redis_client: redis.Redis,
                                                 worker: Any) -> None:
    redis_client.set("wf:switch2", 1)
    wf = tw.workflows.register(workflow(
        "resume2", rec("a"), failing("b", "a", switch="wf:switch2"), rec("c", "a", sleep=0.5),
        rec("d", "b", "c")))
    run = tw.workflows.start(wf.name)
    assert run.wait(timeout=30).state == "FAILED"
    redis_client.delete("wf:switch2")
    status = run.retry().wait(timeout=30)
    assert status.state == "SUCCEEDED"
    assert status.steps["a"].attempt == 1
    assert status.steps["b"].attempt == 2


def test_sigkilled_worker_mid_step_the_run_still_completes(
        tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    env = {"TASKWORKS_VISIBILITY_TIMEOUT": "3"}
    first = start_worker(["default"], env=env, **POOL)
    wf = tw.workflows.register(workflow(
        "kill", rec("a"), Step("victim", "wf.kill_once", params={"label": "victim"},
                               depends_on=("a",)), rec("c", "victim")))
    run = tw.workflows.start(wf.name)
    # the step kills the worker's whole process (threads pool) on its first run
    wait_for(lambda: lrange(redis_client, "wf:order:started") == ["victim"])
    wait_for(lambda: first.proc.poll() is not None, what="the worker to die")
    start_worker(["default"], env=env, **POOL)
    status = run.wait(timeout=60)
    assert status.state == "SUCCEEDED"
    assert status.steps["victim"].tries == 2  # redelivered once, counted
    assert lrange(redis_client, "wf:order") == ["a", "victim", "c"]


def test_all_workers_restarted_mid_run(tw: Any, redis_client: redis.Redis,
                                       start_worker: Callable[..., WorkerProcess]) -> None:
    workers = [start_worker(["default"], **POOL) for _ in range(2)]
    steps = [rec("s0", sleep=0.3)] + [rec(f"s{i}", f"s{i - 1}", sleep=0.3) for i in range(1, 6)]
    wf = tw.workflows.register(workflow("restart", *steps))
    run = tw.workflows.start(wf.name)
    wait_for(lambda: len(lrange(redis_client, "wf:order")) >= 2, what="two steps done")
    for w in workers:  # warm shutdown of all at once: the step in hand finishes (and
        w.proc.send_signal(signal.SIGTERM)  # publishes its dependent), the rest waits
    for w in workers:
        w.stop()
    assert run.status().state == "RUNNING"
    start_worker(["default"], **POOL)
    status = run.wait(timeout=60)
    assert status.state == "SUCCEEDED"
    assert lrange(redis_client, "wf:order") == [f"s{i}" for i in range(6)]


def test_run_timeout_fails_the_run(tw: Any, redis_client: redis.Redis, worker: Any) -> None:
    wf = tw.workflows.register(workflow("timeout", rec("a", sleep=1.5), rec("b", "a"),
                                        timeout=0.5))
    status = tw.workflows.start(wf.name).wait(timeout=30)
    # a's completion is the first event after the deadline: the run fails there
    assert status.state == "FAILED"
    assert status.error == "run timed out"
    assert status.steps["b"].state == "CANCELLED"


def test_cancel_with_terminate_kills_the_running_step(
        tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker(["default"], pool="prefork", concurrency=1)
    wf = tw.workflows.register(workflow("terminate", rec("long", sleep=30), rec("next", "long")))
    run = tw.workflows.start(wf.name)
    wait_for(lambda: lrange(redis_client, "wf:order:started") == ["long"], what="long to start")
    assert run.cancel(terminate=True).state == "CANCELLED"
    # the only pool process is free again long before the 30 s body could have ended
    assert tw.submit("wf.noop").get(timeout=15) == 0
    assert lrange(redis_client, "wf:order") == []
    assert {n: s.state for n, s in run.status().steps.items()} == {
        "long": "CANCELLED", "next": "CANCELLED"}
