"""Workflow definitions: Workflow and Step (frozen), states, and loading from YAML or JSON.

A definition is data: it round-trips through ``to_dict``/``from_dict`` so that the
store keeps the exact definition a run was started with (``workflow_definitions``).
Shape checks happen here (a field of the wrong type); everything that needs the whole
graph or the app (unknown dependency, cycle, unknown task or queue) is in validate.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from taskworks.errors import InvalidInput
from taskworks.runtime.retry import RetryPolicy


class RunState(StrEnum):
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self is not RunState.RUNNING


class StepState(StrEnum):
    PENDING = "PENDING"      # waiting for dependencies
    QUEUED = "QUEUED"        # claimed and published (or waiting for a retry)
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STEP_STATES


TERMINAL_STEP_STATES = frozenset({
    StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED,
})


class SkipReason(StrEnum):
    CONDITION = "condition"              # its own ``when`` was false
    UPSTREAM_SKIPPED = "upstream_skipped"  # a dependency was skipped (and no opt-in)
    UPSTREAM_FAILED = "upstream_failed"    # a dependency failed: resume runs it again


class OnFailure(StrEnum):
    FAIL_FAST = "fail_fast"
    CONTINUE = "continue"


CONDITION_TYPES = ("value_equals", "value_greater_than", "field_exists", "predicate")


@dataclass(frozen=True)
class Condition:
    """``type`` is one of CONDITION_TYPES; ``field`` a dotted path into the step's input
    (``input.x``, ``params.y``, ``results.step.z``); ``value`` what to compare with;
    ``name`` a registered predicate; ``negate`` inverts the outcome."""

    type: str
    field: str | None = None
    value: Any = None
    name: str | None = None
    negate: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for key in ("field", "value", "name"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.negate:
            out["negate"] = True
        return out


@dataclass(frozen=True)
class Step:
    name: str
    task: str
    params: Mapping[str, Any] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    queue: str | None = None
    priority: int | None = None
    soft_timeout: float | None = None
    timeout: float | None = None
    #: None: the step task's own policy (``@tw.task(retry_policy=...)`` or the default)
    retries: RetryPolicy | None = None
    when: Condition | None = None
    on_failure: OnFailure = OnFailure.FAIL_FAST
    #: run even when a dependency was skipped (by a condition, not by a failure)
    run_if_skipped: bool = False
    #: a join that runs once every dependency has ended, whatever the outcome (failed,
    #: skipped by a failure or a condition); its ``results`` hold only the dependencies
    #: that succeeded, so a missing name is a dependency that did not
    run_if_failed: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "task": self.task}
        if self.params:
            out["params"] = dict(self.params)
        if self.depends_on:
            out["depends_on"] = list(self.depends_on)
        for key in ("queue", "priority", "soft_timeout", "timeout"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.retries is not None:
            r = self.retries
            out["retries"] = {"max_retries": r.max_retries, "base_delay": r.base_delay,
                              "backoff_factor": r.backoff_factor, "max_delay": r.max_delay,
                              "jitter": r.jitter}
        if self.when is not None:
            out["when"] = self.when.to_dict()
        if self.on_failure is not OnFailure.FAIL_FAST:
            out["on_failure"] = self.on_failure.value
        if self.run_if_skipped:
            out["run_if_skipped"] = True
        if self.run_if_failed:
            out["run_if_failed"] = True
        return out


@dataclass(frozen=True)
class Workflow:
    name: str
    steps: tuple[Step, ...]
    version: int = 1
    #: seconds from start (or resume) after which the run fails; None: no limit
    timeout: float | None = None
    description: str = ""

    def step(self, name: str) -> Step:
        return self._by_name[name]

    def dependents(self) -> dict[str, list[str]]:
        """Each step's direct dependents (the reverse edges), in definition order.
        Computed once per definition: the engine asks at every completion."""
        return self._dependents

    # cached_property writes the instance __dict__ directly, which a frozen dataclass allows
    @cached_property
    def _by_name(self) -> dict[str, Step]:
        out: dict[str, Step] = {}
        for step in self.steps:
            out.setdefault(step.name, step)
        return out

    @cached_property
    def _dependents(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {s.name: [] for s in self.steps}
        for step in self.steps:
            for dep in step.depends_on:
                if dep in out:
                    out[dep].append(step.name)
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version,
                               "steps": [s.to_dict() for s in self.steps]}
        if self.timeout is not None:
            out["timeout"] = self.timeout
        if self.description:
            out["description"] = self.description
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# -- from data (files, the store) ---------------------------------------------------
STEP_KEYS = frozenset({"name", "task", "params", "depends_on", "queue", "priority",
                       "soft_timeout", "timeout", "retries", "when", "on_failure",
                       "run_if_skipped", "run_if_failed"})
WORKFLOW_KEYS = frozenset({"name", "version", "steps", "timeout", "description"})
RETRY_KEYS = ("max_retries", "base_delay", "backoff_factor", "max_delay", "jitter")
CONDITION_KEYS = frozenset({"type", "field", "value", "name", "negate"})


def _number(where: str, value: Any, *, integer: bool = False) -> Any:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise InvalidInput(where, value, "an integer" if integer else "a number")
    return value


def _unknown(where: str, data: Mapping[str, Any], allowed: frozenset[str]) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise InvalidInput(f"{where}.{extra[0]}", data[extra[0]],
                           f"one of the keys {', '.join(sorted(allowed))}")


def condition_from_dict(where: str, data: Any) -> Condition:
    if not isinstance(data, Mapping):
        raise InvalidInput(where, data, "a mapping with a 'type'")
    _unknown(where, data, CONDITION_KEYS)
    kind = data.get("type")
    if not isinstance(kind, str):
        raise InvalidInput(f"{where}.type", kind, f"one of {', '.join(CONDITION_TYPES)}")
    return Condition(type=kind, field=data.get("field"), value=data.get("value"),
                     name=data.get("name"), negate=bool(data.get("negate", False)))


def retry_from_dict(where: str, data: Any) -> RetryPolicy:
    if isinstance(data, int) and not isinstance(data, bool):
        data = {"max_retries": data}
    if not isinstance(data, Mapping):
        raise InvalidInput(where, data, "a number of retries or a mapping of "
                           + ", ".join(RETRY_KEYS))
    _unknown(where, data, frozenset(RETRY_KEYS))
    kwargs: dict[str, Any] = {}
    for key in RETRY_KEYS:
        if key in data:
            kwargs[key] = (bool(data[key]) if key == "jitter"
                           else _number(f"{where}.{key}", data[key],
                                        integer=key == "max_retries"))
    try:
        return RetryPolicy(**kwargs)
    except InvalidInput as exc:  # say where in the definition, not inside RetryPolicy
        raise InvalidInput(f"{where}.{exc.field.removeprefix('RetryPolicy.')}", exc.value,
                           exc.expected) from None


def step_from_dict(where: str, data: Any) -> Step:
    if not isinstance(data, Mapping):
        raise InvalidInput(where, data, "a mapping with 'name' and 'task'")
    _unknown(where, data, STEP_KEYS)
    name, task = data.get("name"), data.get("task")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{where}.name", name, "a non-empty string")
    where = f"{where} ({name})"
    if not isinstance(task, str) or not task:
        raise InvalidInput(f"{where}.task", task, "a registered task name")
    params = data.get("params") or {}
    if not isinstance(params, Mapping):
        raise InvalidInput(f"{where}.params", params, "a mapping")
    deps = data.get("depends_on") or []
    if isinstance(deps, str):
        deps = [deps]
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise InvalidInput(f"{where}.depends_on", deps, "a list of step names")
    on_failure = data.get("on_failure", OnFailure.FAIL_FAST.value)
    if on_failure not in {m.value for m in OnFailure}:
        raise InvalidInput(f"{where}.on_failure", on_failure, "fail_fast or continue")
    numbers: dict[str, Any] = {}
    for key in ("priority", "soft_timeout", "timeout"):
        if data.get(key) is not None:
            numbers[key] = _number(f"{where}.{key}", data[key], integer=key == "priority")
    queue = data.get("queue")
    if queue is not None and not isinstance(queue, str):
        raise InvalidInput(f"{where}.queue", queue, "a queue name")
    return Step(
        name=name, task=task, params=dict(params), depends_on=tuple(deps), queue=queue,
        retries=(retry_from_dict(f"{where}.retries", data["retries"])
                 if data.get("retries") is not None else None),
        when=(condition_from_dict(f"{where}.when", data["when"])
              if data.get("when") is not None else None),
        on_failure=OnFailure(on_failure), run_if_skipped=bool(data.get("run_if_skipped")),
        run_if_failed=bool(data.get("run_if_failed")),
        **numbers,
    )


def workflow_from_dict(data: Any, source: str = "workflow") -> Workflow:
    if not isinstance(data, Mapping):
        raise InvalidInput(source, data, "a mapping with 'name' and 'steps'")
    _unknown(source, data, WORKFLOW_KEYS)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{source}.name", name, "a non-empty string")
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps:
        raise InvalidInput(f"{source}.steps", steps, "a non-empty list of steps")
    version = data.get("version", 1)
    timeout = data.get("timeout")
    return Workflow(
        name=name, version=_number(f"{source}.version", version, integer=True),
        steps=tuple(step_from_dict(f"steps[{i}]", s) for i, s in enumerate(steps)),
        timeout=None if timeout is None else _number(f"{source}.timeout", timeout),
        description=str(data.get("description") or ""),
    )


#: a definition (file, or API body) larger than this is refused before parsing
MAX_DEFINITION_BYTES = 1_000_000


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load's loader, refusing anchors and aliases while composing, before any
    object is built: ten aliases of ten aliases, five deep, turn 415 bytes into a
    million-item definition (megabytes once stored as JSON)."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # an alias is a NodeEvent carrying the anchor it refers to
        if self.check_event(yaml.NodeEvent) and self.current_event.anchor is not None:
            anchor, mark = self.current_event.anchor, self.current_event.start_mark
            # no mark object: its text is a multi-line excerpt, the error is one line
            raise yaml.composer.ComposerError(
                None, None, f"anchors and aliases (&{anchor}, *{anchor}) are not allowed, "
                f"line {mark.line + 1} column {mark.column + 1}: write the value out")
        return super().compose_node(parent, index)


def load_yaml(text: str) -> Any:
    """YAML data, as ``yaml.safe_load`` (data only) but refusing anchors and aliases
    (yaml.YAMLError) and a text over MAX_DEFINITION_BYTES (InvalidInput)."""
    if len(text) > MAX_DEFINITION_BYTES:
        raise InvalidInput("YAML", f"{len(text):,} characters",
                           f"at most {MAX_DEFINITION_BYTES:,}")
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506  (a SafeLoader)


def load_file(path: str | Path) -> Workflow:
    """A workflow from a .yaml/.yml or .json file (YAML through load_yaml: data only,
    no aliases); a file over MAX_DEFINITION_BYTES is refused without reading it all."""
    p = Path(path)
    try:
        with p.open("rb") as file:
            raw = file.read(MAX_DEFINITION_BYTES + 1)
    except OSError as exc:
        raise InvalidInput("FILE", str(p), f"a readable file ({exc.strerror})") from None
    if len(raw) > MAX_DEFINITION_BYTES:
        raise InvalidInput("FILE", str(p), f"a definition of at most "
                           f"{MAX_DEFINITION_BYTES:,} bytes")
    try:
        text = raw.decode()
        data = json.loads(text) if p.suffix == ".json" else load_yaml(text)
    except (ValueError, yaml.YAMLError) as exc:  # ValueError: JSON, UTF-8
        raise InvalidInput("FILE", str(p), f"valid YAML or JSON ({exc})") from None
    return workflow_from_dict(data, source=p.name)
