"""Validation at registration: every problem of a definition at once, each with its location.

Checks: step names (well formed, unique), dependencies (known, not itself), tasks
registered on the app, queues the app serves, priorities and timeouts, conditions,
cycles (graphlib finds one and prints its path, ``a -> b -> c -> a``), and every time a
step's message stays unacknowledged (its time limits, its retry delays) against the
broker's ``visibility_timeout``: past it, the message is handed to another worker while
the step still runs or waits, and the step's body runs twice.

``check_bounds`` comes first: numbers the definition model leaves open (a name longer
than its column, a version past a 32-bit integer, a timeout of 1e20 seconds, a backoff
whose power overflows) are refused at registration rather than failing when a run
starts, a deadline is computed or a retry waits. The API, the CLI and Python callers all
register through ``Workflows.register``, so they refuse the same definitions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from graphlib import CycleError, TopologicalSorter

from taskworks.errors import InvalidInput, WorkflowInvalid
from taskworks.runtime.retry import RetryPolicy
from taskworks.workflows.conditions import Predicates, problems
from taskworks.workflows.model import Step, Workflow

__all__ = [
    "MAX_NAME", "MAX_RETRIES", "MAX_SECONDS", "MAX_VERSION", "check_bounds", "find_cycle",
    "longest_retry_delay", "unacked_limits", "validate",
]

#: step names end up in task ids and CLI tables: keep them plain
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
#: the store's column sizes: refused at registration rather than failing in PostgreSQL
MAX_NAME = 255
MAX_VERSION = 2**31 - 1
#: ten years: any longer timeout or delay is a mistake, and datetimes overflow further on
MAX_SECONDS = 10 * 365 * 86_400.0
MAX_RETRIES = 1000


def check_bounds(wf: Workflow) -> None:
    """Raise InvalidInput at the first number or name past what the store and the
    engine's arithmetic hold (see the module docstring). Upper bounds only: a version
    below 1 or a timeout <= 0 is one of ``validate``'s problems, listed with the others."""
    if len(wf.name) > MAX_NAME:
        raise InvalidInput("name", wf.name[:40] + "...", f"at most {MAX_NAME} characters")
    if wf.version > MAX_VERSION:
        raise InvalidInput("version", wf.version, f"an integer from 1 to {MAX_VERSION}")
    seconds = f"seconds, at most {MAX_SECONDS:.0f}"
    if wf.timeout is not None and wf.timeout > MAX_SECONDS:
        raise InvalidInput("timeout", wf.timeout, seconds)
    for index, step in enumerate(wf.steps):
        where = _where(index, step)
        for key in ("soft_timeout", "timeout"):
            value = getattr(step, key)
            if value is not None and value > MAX_SECONDS:
                raise InvalidInput(f"{where}.{key}", value, seconds)
        r = step.retries
        if r is None:
            continue
        if r.max_retries > MAX_RETRIES:
            raise InvalidInput(f"{where}.retries.max_retries", r.max_retries,
                               f"at most {MAX_RETRIES}")
        for key in ("base_delay", "max_delay"):
            if getattr(r, key) > MAX_SECONDS:
                raise InvalidInput(f"{where}.retries.{key}", getattr(r, key), seconds)
        try:  # the retry delay is base_delay * backoff_factor ** retries_done
            float(r.backoff_factor) ** r.max_retries
        except OverflowError:
            raise InvalidInput(f"{where}.retries.backoff_factor", r.backoff_factor,
                               f"a factor whose power {r.max_retries} (max_retries) is a "
                               "finite number") from None


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


def _unacked(step: Step, delays: bool = True) -> list[tuple[str, float, float]]:
    """The step's own durations that keep its message unacknowledged, as (field, seconds,
    value as written): time limits while it runs (acks_late), retry delays while it waits
    (a countdown's message waits reserved in a worker). Steps without them use the
    worker's limits and their task's policy, which ``taskworks doctor`` checks."""
    found = [(key, float(value), float(value)) for key in ("timeout", "soft_timeout")
             if (value := getattr(step, key)) is not None]
    if delays and step.retries is not None \
            and (longest := longest_retry_delay(step.retries)) > 0:
        found.append(("retries.max_delay", longest, step.retries.max_delay))
    return found


def unacked_limits(workflow: Workflow, delays: bool = True) -> dict[str, float]:
    """Seconds each step's message may stay unacknowledged, by location (for doctor);
    without ``delays`` when retries wait in the durable schedule, not in a worker."""
    return {f"{_where(index, step)}.{key}": seconds
            for index, step in enumerate(workflow.steps)
            for key, seconds, _ in _unacked(step, delays)}


def _visibility_problems(where: str, step: Step, visibility_timeout: float,
                         delays: bool) -> list[str]:
    found: list[str] = []
    for key, seconds, written in _unacked(step, delays):
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
                   visibility_timeout: float | None, delays: bool) -> list[str]:
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
        found += _visibility_problems(where, step, visibility_timeout, delays)
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
             predicates: Predicates, visibility_timeout: float | None = None,
             delays: bool = True) -> None:
    """Raise WorkflowInvalid listing every problem, or return. ``visibility_timeout``
    (the broker's, in seconds) bounds each step's time limits, and its retry delays
    with ``delays`` (False when they wait in the durable schedule, not in a worker)."""
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
                                visibility_timeout, delays)
    cycle = find_cycle(workflow)
    if cycle:
        found.append(f"depends_on: cycle {' -> '.join(cycle)}")
    if found:
        raise WorkflowInvalid(workflow.name, found)
