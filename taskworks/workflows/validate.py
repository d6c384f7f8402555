"""Validation at registration: every problem of a definition at once, each with its location.

Checks: step names (well formed, unique), dependencies (known, not itself), tasks
registered on the app, queues the app serves, priorities and timeouts, conditions,
cycles (graphlib finds one and prints its path, ``a -> b -> c -> a``), and every time a
step's message stays unacknowledged (its time limits, its retry delays) against the
broker's ``visibility_timeout``: past it, the message is handed to another worker while
the step still runs or waits, and the step's body runs twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from graphlib import CycleError, TopologicalSorter

from taskworks.errors import WorkflowInvalid
from taskworks.runtime.retry import RetryPolicy
from taskworks.workflows.conditions import Predicates, problems
from taskworks.workflows.model import Step, Workflow

#: step names end up in task ids and CLI tables: keep them plain
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def _where(index: int, step: Step) -> str:
    return f"steps[{index}] ({step.name})"


def longest_retry_delay(policy: RetryPolicy) -> float:
    """The longest countdown the engine gives a step's retry; 0 when it never retries.

    Not simply ``max_delay``: the engine waits ``policy.delay(tries - 1)`` with
    ``tries <= max_retries`` (no server hints for steps), so a cap the backoff never
    reaches is harmless and is not refused.
    """
    if policy.max_retries < 1:
        return 0.0
    longest = policy.base(policy.max_retries - 1)
    if policy.jitter:
        longest *= 1 + policy.jitter_range[1]
    return min(policy.max_delay, longest)


def _unacked(step: Step) -> list[tuple[str, float, float]]:
    """The step's own durations that keep its message unacknowledged, as (field, seconds,
    value as written): time limits while it runs (acks_late), retry delays while it waits
    (a countdown's message waits reserved in a worker). Steps without them use the
    worker's limits and their task's policy, which ``taskworks doctor`` checks."""
    found = [(key, float(value), float(value)) for key in ("timeout", "soft_timeout")
             if (value := getattr(step, key)) is not None]
    if step.retries is not None and (longest := longest_retry_delay(step.retries)) > 0:
        found.append(("retries.max_delay", longest, step.retries.max_delay))
    return found


def unacked_limits(workflow: Workflow) -> dict[str, float]:
    """Seconds each step's message may stay unacknowledged, by location (for doctor)."""
    return {f"{_where(index, step)}.{key}": seconds
            for index, step in enumerate(workflow.steps)
            for key, seconds, _ in _unacked(step)}


def _visibility_problems(where: str, step: Step, visibility_timeout: float) -> list[str]:
    found: list[str] = []
    for key, seconds, written in _unacked(step):
        if seconds < visibility_timeout:
            continue
        got = f"{written:g}" if seconds == written else \
            f"{written:g} (its retries wait up to {seconds:g}s)"
        found.append(f"{where}.{key}: got {got}, expected seconds below visibility_timeout "
                     f"({visibility_timeout:g}): the broker would hand the message out again "
                     "while the step still runs or waits, and run it twice")
    return found


def _step_problems(index: int, step: Step, names: set[str], tasks: Iterable[str],
                   queues: Iterable[str], predicates: Predicates,
                   visibility_timeout: float | None) -> list[str]:
    where = _where(index, step)
    found: list[str] = []
    if not NAME.match(step.name):
        found.append(f"{where}.name: got {step.name!r}, expected letters, digits, _ . - "
                     "(at most 128)")
    if step.task not in tasks:
        found.append(f"{where}.task: unknown task {step.task!r} (not registered on the app)")
    if step.queue is not None and step.queue not in queues:
        found.append(f"{where}.queue: unknown queue {step.queue!r} (known: "
                     f"{', '.join(sorted(queues))})")
    seen: set[str] = set()
    for dep in step.depends_on:
        if dep == step.name:
            found.append(f"{where}.depends_on: a step cannot depend on itself")
        elif dep not in names:
            found.append(f"{where}.depends_on: unknown step {dep!r}")
        if dep in seen:
            found.append(f"{where}.depends_on: {dep!r} listed twice")
        seen.add(dep)
    if step.priority is not None and not 0 <= step.priority <= 9:
        found.append(f"{where}.priority: got {step.priority!r}, expected 0-9")
    for key in ("soft_timeout", "timeout"):
        value = getattr(step, key)
        if value is not None and value <= 0:
            found.append(f"{where}.{key}: got {value!r}, expected seconds > 0")
    if (step.soft_timeout is not None and step.timeout is not None
            and step.soft_timeout >= step.timeout):
        found.append(f"{where}.soft_timeout: {step.soft_timeout} must be below timeout "
                     f"{step.timeout}")
    if visibility_timeout is not None:
        found += _visibility_problems(where, step, visibility_timeout)
    if step.when is not None:
        found += [f"{where}.when.{p}" for p in problems(step.when, predicates)]
    return found


def find_cycle(workflow: Workflow) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None."""
    known = {s.name for s in workflow.steps}
    graph = {s.name: [d for d in s.depends_on if d in known and d != s.name]
             for s in workflow.steps}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        # graphlib walks from a step to its dependents: "a -> b" reads "b depends on a"
        return [str(n) for n in exc.args[1]]
    return None


def validate(workflow: Workflow, tasks: Iterable[str], queues: Iterable[str],
             predicates: Predicates, visibility_timeout: float | None = None) -> None:
    """Raise WorkflowInvalid listing every problem, or return. ``visibility_timeout``
    (the broker's, in seconds) bounds each step's time limits and retry delays."""
    tasks, queues = set(tasks), set(queues)
    found: list[str] = []
    if workflow.version < 1:
        found.append(f"version: got {workflow.version!r}, expected an integer >= 1")
    if workflow.timeout is not None and workflow.timeout <= 0:
        found.append(f"timeout: got {workflow.timeout!r}, expected seconds > 0")
    names = [s.name for s in workflow.steps]
    first: dict[str, int] = {}
    for index, step in enumerate(workflow.steps):
        if step.name in first:
            found.append(f"{_where(index, step)}.name: duplicate step name {step.name!r} "
                         f"(first at steps[{first[step.name]}])")
        first.setdefault(step.name, index)
    for index, step in enumerate(workflow.steps):
        found += _step_problems(index, step, set(names), tasks, queues, predicates,
                                visibility_timeout)
    cycle = find_cycle(workflow)
    if cycle:
        found.append(f"depends_on: cycle {' -> '.join(cycle)}")
    if found:
        raise WorkflowInvalid(workflow.name, found)
