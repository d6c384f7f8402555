"""Runs on a real worker: linear, diamond, data passing, fan-out/fan-in, conditions."""

from __future__ import annotations

import uuid
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskworks.workflows import Condition, Step
from tests.workflows.conftest import rec, workflow


def order(redis_client: redis.Redis, key: str = "wf:order") -> list[str]:
    return [str(x) for x in redis_client.lrange(key, 0, -1)]


def test_linear_runs_in_order_once_each(tw: Any, redis_client: redis.Redis, worker: Any) -> None:
    wf = tw.workflows.register(workflow("linear", rec("a"), rec("b", "a"), rec("c", "b")))
    status = tw.workflows.start(wf.name, {"n": 1}).wait(timeout=30)
    assert status.state == "SUCCEEDED", status
    assert order(redis_client) == ["a", "b", "c"]
    assert {n: (s.state, s.attempt, s.tries) for n, s in status.steps.items()} == {
        n: ("SUCCEEDED", 1, 1) for n in "abc"}
    assert status.steps["c"].result == {"label": "c", "value": None, "deps": ["b"]}


def test_diamond_join_runs_after_both_branches(tw: Any, redis_client: redis.Redis,
                                               worker: Any) -> None:
    wf = tw.workflows.register(workflow(
        "diamond", rec("top"), rec("left", "top", sleep=1.0), rec("right", "top"),
        rec("join", "left", "right")))
    status = tw.workflows.start(wf.name).wait(timeout=30)
    assert status.state == "SUCCEEDED"
    seen = order(redis_client)
    assert seen[0] == "top"
    assert seen[-1] == "join"
    assert sorted(seen) == sorted(
        ["top", "left", "right", "join"])
    # true parallelism: right did not wait for left (no level barrier needed either way,
    # but right finishing first shows the branches ran side by side)
    assert seen.index("right") < seen.index("left")
    assert status.steps["join"].result["deps"] == ["left", "right"]


def test_data_passing_input_params_and_results(tw: Any, worker: Any) -> None:
    wf = tw.workflows.register(workflow(
        "data",
        Step("a", "wf.add", params={"amount": 1}),
        Step("b", "wf.add", params={"amount": 10}, depends_on=("a",)),
        Step("c", "wf.add", params={"amount": 100}, depends_on=("a",)),
        Step("d", "wf.add", params={"amount": 1000}, depends_on=("b", "c")),
    ))
    status = tw.workflows.start(wf.name, {"x": 5}).wait(timeout=30)
    assert status.results() == {"a": 6, "b": 16, "c": 106, "d": 1122}


def test_thousand_step_fan_out_fan_in(tw: Any, worker: Any) -> None:
    middle = [Step(f"m{i}", "wf.noop", depends_on=("root",)) for i in range(1000)]
    wf = tw.workflows.register(workflow(
        "fan", Step("root", "wf.noop"), *middle,
        Step("join", "wf.noop", depends_on=tuple(s.name for s in middle))))
    status = tw.workflows.start(wf.name).wait(timeout=150)
    assert status.state == "SUCCEEDED"
    assert len(status.steps) == 1002
    assert {(s.state, s.tries) for s in status.steps.values()} == {("SUCCEEDED", 1)}
    assert status.steps["join"].result == 1000  # it received every branch's result


def test_conditions_skip_and_propagation(tw: Any, redis_client: redis.Redis,
                                         worker: Any) -> None:
    big = Condition("value_greater_than", field="input.size", value=100)
    wf = tw.workflows.register(workflow(
        "cond",
        rec("check"),
        Step("detailed", "wf.record", params={"label": "detailed"}, depends_on=("check",),
             when=big),
        Step("quick", "wf.record", params={"label": "quick"}, depends_on=("check",),
             when=Condition("value_greater_than", field="input.size", value=100, negate=True)),
        rec("after_detailed", "detailed"),                       # skipped: no opt-in
        Step("report", "wf.record", params={"label": "report"},
             depends_on=("detailed", "quick"), run_if_skipped=True),  # opts in
        Step("has_flag", "wf.record", params={"label": "has_flag"}, depends_on=("check",),
             when=Condition("field_exists", field="input.flag")),
        Step("pred", "wf.record", params={"label": "pred"}, depends_on=("check",),
             when=Condition("predicate", name="input_is_large")),
        Step("eq", "wf.record", params={"label": "eq"}, depends_on=("check",),
             when=Condition("value_equals", field="results.check.label", value="check")),
    ))
    status = tw.workflows.start(wf.name, {"size": 5}).wait(timeout=30)
    assert status.state == "SUCCEEDED"
    states = {n: (s.state, s.skip_reason) for n, s in status.steps.items()}
    assert states == {
        "check": ("SUCCEEDED", None), "detailed": ("SKIPPED", "condition"),
        "quick": ("SUCCEEDED", None), "after_detailed": ("SKIPPED", "upstream_skipped"),
        "report": ("SUCCEEDED", None), "has_flag": ("SKIPPED", "condition"),
        "pred": ("SKIPPED", "condition"), "eq": ("SUCCEEDED", None),
    }
    assert status.steps["report"].result["deps"] == ["detailed", "quick"]
    assert sorted(order(redis_client)) == ["check", "eq", "quick", "report"]

    redis_client.delete("wf:order")
    status = tw.workflows.start(wf.name, {"size": 500, "flag": True}).wait(timeout=30)
    assert {n for n, s in status.steps.items() if s.state == "SUCCEEDED"} == {
        "check", "detailed", "after_detailed", "report", "has_flag", "pred", "eq"}


def test_unserialisable_result_fails_the_step(tw: Any, worker: Any) -> None:
    wf = tw.workflows.register(workflow("bad-result", Step("x", "wf.unserialisable")))
    status = tw.workflows.start(wf.name).wait(timeout=30)
    assert status.state == "FAILED"
    assert status.failed_step == "x"
    assert "TypeError" in (status.error or "")


def test_two_workers_many_diamond_joins_each_step_runs_once(
        tw: Any, redis_client: redis.Redis, start_worker: Any) -> None:
    """Joins whose two dependencies finish at the same moment on different workers."""
    for _ in range(2):
        start_worker(["default"], pool="prefork", concurrency=2)
    n = 40
    steps = [rec("root")] + [rec(f"b{i}", "root") for i in range(n)] + [
        rec(f"j{i}", f"b{i}", f"b{i + 1}") for i in range(n - 1)] + [
        rec("end", *[f"j{i}" for i in range(n - 1)])]
    wf = tw.workflows.register(workflow("joins", *steps))
    status = tw.workflows.start(wf.name).wait(timeout=90)
    assert status.state == "SUCCEEDED"
    ran = order(redis_client)
    assert sorted(ran) == sorted(s.name for s in steps)  # each exactly once
    assert {s.tries for s in status.steps.values()} == {1}
    position = {name: i for i, name in enumerate(ran)}
    for step in steps:
        assert all(position[d] < position[step.name] for d in step.depends_on)
    assert len({s.task_id for s in status.steps.values()}) == len(steps)


@settings(max_examples=4, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_property_random_dags_on_a_real_worker(tw: Any, redis_client: redis.Redis,
                                               worker: Any, data: st.DataObject) -> None:
    """Small random DAGs on a real worker: every step once, after its dependencies."""
    n = data.draw(st.integers(2, 10))
    key = f"wf:prop:{uuid.uuid4().hex}"
    steps = []
    for i in range(n):
        deps = data.draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        steps.append(rec(f"s{i}", *[f"s{d}" for d in sorted(deps)], key=key))
    wf = tw.workflows.register(workflow("prop", *steps))
    status = tw.workflows.start(wf.name).wait(timeout=60)
    assert status.state == "SUCCEEDED"
    ran = order(redis_client, key)
    assert sorted(ran) == sorted(s.name for s in steps)
    position = {name: i for i, name in enumerate(ran)}
    for step in steps:
        assert all(position[d] < position[step.name] for d in step.depends_on)


def test_wait_inside_a_task_refuses(tw: Any, worker: Any) -> None:
    wf = tw.workflows.register(workflow("waited", rec("a")))
    run = tw.workflows.start(wf.name)
    answer = tw.submit("wf.waits_inside", [run.id]).get(timeout=30)
    assert answer.startswith("TaskworksError: Run.wait() inside a task would block a worker")
