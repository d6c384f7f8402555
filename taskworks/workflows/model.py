"""Workflow definitions: Workflow and Step (frozen), states, and loading from YAML or JSON.

A definition is data: it round-trips through ``to_dict``/``workflow_from_dict`` so that
the store keeps the exact definition a run was started with (``workflow_definitions``).
Workflow, Step and Condition are pydantic dataclasses: their shape (a field of the wrong
type, an unknown key) is checked when one is built, from Python or from data, and the
API shows them in its schema. Everything that needs the whole graph or the app (unknown
dependency, cycle, unknown task or queue) is in validate.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationError,
)
from pydantic import Strict as StrictType
from pydantic.dataclasses import dataclass
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from taskworks.errors import InvalidInput
from taskworks.runtime.retry import RetryPolicy
from taskworks.schema import Strict, finite_number, problems, refuse


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

#: a definition: unknown keys are refused, never ignored
_DEFINITION = ConfigDict(extra="forbid")
#: numbers as JSON has them: "5" is not a number, true is not an integer
Integer = Annotated[int, StrictType()]
#: as written: 60 stays 60 (a stored definition compares equal to its file)
Seconds = Annotated[float | int, BeforeValidator(finite_number)]


@dataclass(frozen=True, config=_DEFINITION)
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


class RetrySpec(Strict):
    """A step's retries as written: a number of retries, or these keys."""

    max_retries: Integer = 3
    base_delay: Seconds = 1.0
    backoff_factor: Seconds = 2.0
    max_delay: Seconds = 300.0
    jitter: bool = True


def _retry_policy(value: object) -> RetryPolicy | None:
    if value is None or isinstance(value, RetryPolicy):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"max_retries": value}
    if not isinstance(value, Mapping):
        refuse("a number of retries or a mapping of " + ", ".join(RetrySpec.model_fields))
    spec = RetrySpec.model_validate(value)  # its errors are located under ``retries``
    try:
        return RetryPolicy(**spec.model_dump())
    except InvalidInput as exc:  # say where in the definition, not inside RetryPolicy
        refuse(exc.expected, exc.value, at=(exc.field.removeprefix("RetryPolicy."),))


def _retry_spec(policy: RetryPolicy) -> dict[str, Any]:
    """A policy as a definition writes it (the RetrySpec keys): how it is stored and
    shown; its Python-only parts (exception classes) stay in the registering process."""
    return {"max_retries": policy.max_retries, "base_delay": policy.base_delay,
            "backoff_factor": policy.backoff_factor, "max_delay": policy.max_delay,
            "jitter": policy.jitter}


class _RetriesField:
    """How pydantic handles ``Step.retries``: a RetrySpec (or a number of retries) in,
    a RetryPolicy held, the RetrySpec out. RetryPolicy's own fields (exception classes)
    never reach pydantic: they are neither data nor schema."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any,
                                     handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            _retry_policy, serialization=core_schema.plain_serializer_function_ser_schema(
                lambda policy: None if policy is None else _retry_spec(policy)))

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"anyOf": [{"type": "integer"}, RetrySpec.model_json_schema(),
                          {"type": "null"}]}


def _text(expected: str) -> Any:
    def check(value: object) -> str:
        if not isinstance(value, str) or not value:
            refuse(expected, value)
        return value
    return BeforeValidator(check)


def _step_names(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple) or not all(isinstance(d, str) for d in names):
        refuse("a list of step names", value)
    return tuple(names)


def _on_failure(value: object) -> OnFailure:
    if value not in {m.value for m in OnFailure}:
        refuse("fail_fast or continue", value)
    return OnFailure(value)


def _params(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        refuse("a mapping", value)
    return dict(value)


@dataclass(frozen=True, config=_DEFINITION)
class Step:
    name: Annotated[str, _text("a non-empty string")]
    task: Annotated[str, _text("a registered task name")]
    params: Annotated[Mapping[str, Any], BeforeValidator(_params)] = Field(
        default_factory=dict)
    depends_on: Annotated[tuple[str, ...], BeforeValidator(_step_names)] = ()
    queue: str | None = None
    priority: Integer | None = None
    soft_timeout: Seconds | None = None
    timeout: Seconds | None = None
    #: None: the step task's own policy (``@tw.task(retry_policy=...)`` or the default)
    retries: Annotated[RetryPolicy | None, _RetriesField] = None
    when: Condition | None = None
    on_failure: Annotated[OnFailure, BeforeValidator(_on_failure)] = OnFailure.FAIL_FAST
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
            out["retries"] = _retry_spec(self.retries)
        if self.when is not None:
            out["when"] = self.when.to_dict()
        if self.on_failure is not OnFailure.FAIL_FAST:
            out["on_failure"] = self.on_failure.value
        if self.run_if_skipped:
            out["run_if_skipped"] = True
        if self.run_if_failed:
            out["run_if_failed"] = True
        return out


def _steps(value: object) -> object:
    if not isinstance(value, list | tuple) or not value:
        refuse("a non-empty list of steps", value)
    return value


@dataclass(frozen=True, config=_DEFINITION)
class Workflow:
    name: Annotated[str, _text("a non-empty string")]
    steps: Annotated[tuple[Step, ...], BeforeValidator(_steps)]
    version: Integer = 1
    #: seconds from start (or resume) after which the run fails; None: no limit
    timeout: Seconds | None = None
    description: Annotated[str, BeforeValidator(lambda v: str(v or ""))] = ""

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


# -- from data (files, the store, API bodies) --------------------------------------
_WORKFLOW = TypeAdapter(Workflow)


def workflow_from_dict(data: Any, source: str = "workflow") -> Workflow:
    """A definition from data, or InvalidInput at its first problem: a workflow's own
    field as ``<source>.field``, a step's as ``steps[i] (name).field``."""
    if not isinstance(data, Mapping):
        raise InvalidInput(source, data, "a mapping with 'name' and 'steps'")
    try:
        return _WORKFLOW.validate_python(dict(data))
    except ValidationError as exc:
        where, value, expected = problems(exc, "", data, Workflow, "one of the keys")[0]
        raise InvalidInput(_located(source, data, where), value, expected) from None


def _located(source: str, data: Mapping[str, Any], where: str) -> str:
    """``steps.0.task`` as the definition's readers know it: ``steps[0] (fetch).task``
    (no name when the step has no usable one, or its key is the problem)."""
    parts = where.split(".")
    if parts[0] != "steps" or len(parts) < 2 or not parts[1].isdigit():
        return f"{source}.{where}" if where else source
    index = int(parts[1])
    step = data["steps"][index] if isinstance(data.get("steps"), list) else None
    label = f"steps[{index}]"
    name = step.get("name") if isinstance(step, Mapping) else None
    rest = parts[2:]
    unknown_key = len(rest) == 1 and isinstance(step, Mapping) and rest[0] not in STEP_KEYS
    if isinstance(name, str) and name and not unknown_key:
        label += f" ({name})"
    return ".".join([label, *rest])


STEP_KEYS = frozenset(Step.__dataclass_fields__)


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
