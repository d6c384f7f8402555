"""Every kind of invalid definition gives its clear error, all of them at once."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from taskworks.errors import InvalidInput, WorkflowInvalid
from taskworks.runtime.retry import RetryPolicy
from taskworks.workflows import Condition, Step, Workflow, load_file, workflow_from_dict
from taskworks.workflows.validate import MAX_RETRIES, MAX_SECONDS, MAX_VERSION, validate
from tests.workflows.conftest import unique


def problems(tw: Any, *steps: Step, **kwargs: Any) -> list[str]:
    with pytest.raises(WorkflowInvalid) as info:
        tw.workflows.register(Workflow(unique("bad"), tuple(steps), **kwargs))
    return info.value.errors


def test_every_problem_is_reported_at_once_with_its_location(tw: Any) -> None:
    errors = problems(
        tw,
        Step("a", "wf.record"),
        Step("a", "wf.record"),
        Step("clean", "wf.record", depends_on=("x",)),
        Step("t", "no.such.task", queue="nowhere", priority=12),
        Step("w", "wf.record", when=Condition("value_greater_than", field="input.n",
                                               value="big")),
    )
    assert errors == [
        "steps[1] (a).name: duplicate step name 'a' (first at steps[0])",
        "steps[2] (clean).depends_on: unknown step 'x'",
        "steps[3] (t).task: unknown task 'no.such.task' (not registered on the app)",
        "steps[3] (t).queue: unknown queue 'nowhere' (known: cpu_intensive, default, "
        "io_intensive, priority, scheduled)",
        "steps[3] (t).priority: got 12, expected 0-9",
        "steps[4] (w).when.value: got 'big', expected a number",
    ]


def test_cycle_prints_its_path(tw: Any) -> None:
    errors = problems(tw, Step("a", "wf.record", depends_on=("c",)),
                      Step("b", "wf.record", depends_on=("a",)),
                      Step("c", "wf.record", depends_on=("b",)),
                      Step("d", "wf.record"))
    assert len(errors) == 1
    assert errors[0].startswith("depends_on: cycle ")
    path = errors[0].removeprefix("depends_on: cycle ").split(" -> ")
    assert path[0] == path[-1]
    assert sorted(path[:-1]) == ["a", "b", "c"]
    # each arrow points from a step to one of its dependents
    deps = {"a": "c", "b": "a", "c": "b"}
    assert all(deps[after] == before for before, after in itertools.pairwise(path))


def test_self_dependency_and_bad_conditions(tw: Any) -> None:
    errors = problems(
        tw,
        Step("s", "wf.record", depends_on=("s",)),
        Step("p", "wf.record", when=Condition("predicate", name="nope")),
        Step("k", "wf.record", when=Condition("regex_match", field="input.x")),
        Step("f", "wf.record", when=Condition("field_exists", field="elsewhere.x")),
        Step("t", "wf.record", soft_timeout=10, timeout=5),
    )
    assert errors == [
        "steps[0] (s).depends_on: a step cannot depend on itself",
        "steps[1] (p).when.name: unknown predicate 'nope' (registered: input_is_large, "
        "medium_sized)",
        "steps[2] (k).when.type: got 'regex_match', expected one of value_equals, "
        "value_greater_than, field_exists, predicate",
        "steps[3] (f).when.field: got 'elsewhere.x', expected a path starting with input., "
        "params. or results.",
        "steps[4] (t).soft_timeout: 10 must be below timeout 5",
    ]


def test_message_lists_every_problem(tw: Any) -> None:
    with pytest.raises(WorkflowInvalid) as info:
        tw.workflows.register(Workflow("w", (Step("a", "x"), Step("b", "y"))))
    text = str(info.value)
    assert "found 2 problem(s)" in text
    assert "steps[0] (a).task" in text
    assert "steps[1] (b).task" in text
    assert isinstance(info.value, InvalidInput)


def test_file_shape_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps:\n  - name: a\n    task: t\n    depends_on: 3\n")
    with pytest.raises(InvalidInput, match=r"steps\[0\] \(a\)\.depends_on: got 3"):
        load_file(bad)
    bad.write_text("name: x\nsteps: [ {name: a, task: t, colour: red} ]\n")
    with pytest.raises(InvalidInput, match=r"steps\[0\]\.colour: got 'red'"):
        load_file(bad)
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InvalidInput, match="valid YAML or JSON"):
        load_file(bad)
    with pytest.raises(InvalidInput, match="readable file"):
        load_file(tmp_path / "missing.yaml")
    with pytest.raises(InvalidInput, match="on_failure"):
        workflow_from_dict({"name": "x", "steps": [{"name": "a", "task": "t",
                                                     "on_failure": "explode"}]})
    with pytest.raises(InvalidInput, match=r"steps\[0\] \(a\)\.retries\.max_retries: got -1"):
        workflow_from_dict({"name": "x", "steps": [{"name": "a", "task": "t",
                                                     "retries": {"max_retries": -1}}]})


def test_yaml_round_trip_and_version_rules(tw: Any, tmp_path: Path) -> None:
    name = unique("yaml")
    path = tmp_path / "wf.yaml"
    path.write_text(f"""
name: {name}
version: 2
timeout: 60
steps:
  - name: a
    task: wf.record
    params: {{label: a}}
    retries: {{max_retries: 2, base_delay: 0.1}}
  - name: b
    task: wf.record
    depends_on: [a]
    queue: default
    priority: 7
    when: {{type: value_equals, field: input.go, value: true}}
    on_failure: continue
    run_if_skipped: true
  - name: c
    task: wf.record
    depends_on: [b]
    run_if_failed: true
""")
    wf = tw.workflows.register(path)
    assert wf.version == 2
    assert (wf.step("c").run_if_failed, wf.step("b").run_if_failed) == (True, False)
    assert wf.step("b").when == Condition("value_equals", "input.go", True)
    assert wf.step("a").retries is not None
    assert wf.step("a").retries.max_retries == 2
    assert workflow_from_dict(wf.to_dict()) == wf
    tw.workflows.register(path)  # the same version again: a no-op
    changed = Workflow(name, (Step("a", "wf.record"),), version=2)
    with pytest.raises(InvalidInput, match="version"):
        tw.workflows.register(changed)
    tw.workflows.register(Workflow(name, (Step("a", "wf.record"),), version=3))
    assert (name, 3) in {(n, v) for n, v, _ in tw.workflows.definitions()}


def test_start_errors(tw: Any) -> None:
    with pytest.raises(InvalidInput, match="registered workflow"):
        tw.workflows.start("never-registered")
    wf = tw.workflows.register(Workflow(unique("in"), (Step("a", "wf.record"),)))
    with pytest.raises(InvalidInput, match="JSON"):
        tw.workflows.start(wf.name, {"x": object()})


# -- against the broker's visibility_timeout (7200 s in the tests' settings) --------------


STEPS_PAST_THE_TIMEOUT = (
    Step("hard", "wf.record", timeout=7200),  # equal: already too long
    Step("soft", "wf.record", soft_timeout=9000),
    Step("capped", "wf.record", retries=RetryPolicy(
        max_retries=2, base_delay=5000, max_delay=9000, jitter=False)),
    Step("backoff", "wf.record", retries=RetryPolicy(
        max_retries=2, base_delay=4000, max_delay=20000, jitter=False)),
    # jitter adds up to 30 %: 6000 s can become 7800 s
    Step("jitter", "wf.record", retries=RetryPolicy(
        max_retries=1, base_delay=6000, max_delay=8000)),
)
TAIL = ("expected seconds below visibility_timeout (7200): the broker would hand the "
        "message out again while the step still runs or waits, and run it twice")


def test_step_timeouts_must_stay_below_the_visibility_timeout(tw: Any) -> None:
    """Retry delays need not: with taskworks' transport a retry waits in the durable
    schedule, not in a worker (broker/schedule.py)."""
    assert tw.settings.visibility_timeout == 7200
    assert problems(tw, *STEPS_PAST_THE_TIMEOUT) == [
        f"steps[0] (hard).timeout: got 7200, {TAIL}",
        f"steps[1] (soft).soft_timeout: got 9000, {TAIL}",
    ]


def test_retry_delays_must_stay_below_it_where_a_worker_holds_them(tw: Any) -> None:
    """An app on another transport (an adopted one on kombu's) holds a retry's message
    in the worker until it is due."""
    with pytest.raises(WorkflowInvalid) as info:
        validate(Workflow(unique("bad"), STEPS_PAST_THE_TIMEOUT), tw.app.tasks.keys(),
                 tw.queue_names(), tw.workflows.predicates, visibility_timeout=7200,
                 delays=True)
    assert info.value.errors == [
        f"steps[0] (hard).timeout: got 7200, {TAIL}",
        f"steps[1] (soft).soft_timeout: got 9000, {TAIL}",
        f"steps[2] (capped).retries.max_delay: got 9000, {TAIL}",
        f"steps[3] (backoff).retries.max_delay: got 20000 (its retries wait up to "
        f"8000s), {TAIL}",
        f"steps[4] (jitter).retries.max_delay: got 8000 (its retries wait up to 7800s), "
        f"{TAIL}",
    ]


def test_what_stays_below_the_visibility_timeout_is_accepted(tw: Any) -> None:
    wf = tw.workflows.register(Workflow(unique("under"), (
        Step("a", "wf.record", soft_timeout=7000, timeout=7199),
        # a cap the backoff never reaches: 1 s, then 2 s
        Step("b", "wf.record", retries=RetryPolicy(max_retries=2, base_delay=1,
                                                   max_delay=100_000)),
        # never retries: its delays do not matter
        Step("c", "wf.record", retries=RetryPolicy(max_retries=0, base_delay=9000,
                                                   max_delay=9000)),
    )))
    assert [s.name for s in wf.steps] == ["a", "b", "c"]


def test_a_file_with_a_step_past_the_visibility_timeout_is_refused(tw: Any,
                                                                    tmp_path: Path) -> None:
    name, path = unique("slow"), tmp_path / "slow.yaml"
    path.write_text(f"name: {name}\nsteps:\n  - name: crunch\n    task: wf.record\n"
                    "    timeout: 10800\n")
    with pytest.raises(InvalidInput, match=r"steps\[0\] \(crunch\)\.timeout: got 10800, "
                                           r"expected seconds below visibility_timeout"):
        tw.workflows.register(path)
    assert name not in {n for n, _, _ in tw.workflows.definitions()}  # nothing stored


# -- bounds that keep a run from overflowing later (the API refuses the same: ------------
# -- tests/api/test_workflows.py) ----------------------------------------------------------


@pytest.mark.parametrize(("change", "field"), [
    ({"timeout": 1e20}, "timeout"),
    ({"version": 2**40}, "version"),
    ({"steps": [{"name": "a", "task": "wf.record", "timeout": 1e20}]}, "steps[0] (a).timeout"),
    ({"steps": [{"name": "a", "task": "wf.record", "soft_timeout": 1e20}]},
     "steps[0] (a).soft_timeout"),
    ({"steps": [{"name": "a", "task": "wf.record",
                 "retries": {"max_retries": 10**6}}]}, "steps[0] (a).retries.max_retries"),
    ({"steps": [{"name": "a", "task": "wf.record",
                 "retries": {"max_retries": 1, "max_delay": 1e20}}]},
     "steps[0] (a).retries.max_delay"),
    ({"steps": [{"name": "a", "task": "wf.record",
                 "retries": {"max_retries": 999, "backoff_factor": 50}}]},
     "steps[0] (a).retries.backoff_factor"),
    ({"name": "x" * 300}, "name"),
])
def test_numbers_that_would_overflow_later_are_refused_at_registration(
        tw: Any, change: dict[str, Any], field: str) -> None:
    wf = workflow_from_dict({"name": unique("big"),
                             "steps": [{"name": "a", "task": "wf.record"}], **change})
    for check in (tw.workflows.validate, tw.workflows.register):
        with pytest.raises(InvalidInput) as info:
            check(wf)
        assert not isinstance(info.value, WorkflowInvalid)
        assert info.value.field == field
    assert (wf.name, wf.version) not in {(n, v) for n, v, _ in tw.workflows.definitions()}


def test_the_largest_accepted_numbers_register(tw: Any) -> None:
    wf = tw.workflows.register(workflow_from_dict({
        "name": unique("x" * 200), "version": MAX_VERSION, "timeout": MAX_SECONDS,
        "steps": [{"name": "a", "task": "wf.record",
                   "retries": {"max_retries": MAX_RETRIES, "backoff_factor": 2,
                               "max_delay": 60}}]}))
    assert tw.workflows.definition(wf.name).version == MAX_VERSION


def test_a_version_below_one_is_listed_with_the_other_problems(tw: Any) -> None:
    assert problems(tw, Step("a", "no.such.task"), version=0, timeout=0) == [
        "version: got 0, expected an integer >= 1",
        "timeout: got 0, expected seconds > 0",
        "steps[0] (a).task: unknown task 'no.such.task' (not registered on the app)",
    ]
