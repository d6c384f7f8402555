"""Step conditions (the patterns guide's conditional workflow), evaluated on the step's input.

The step's input is the document ``{"input": <run input>, "params": <step params>,
"results": {<dependency>: <its result>}}``; a condition's ``field`` is a dotted path in
it, e.g. ``input.data_size`` or ``results.check.rows``. Predicates are functions
registered by name on ``tw.workflows.predicates``: never looked up in ``globals()``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from taskworks.errors import InvalidInput
from taskworks.workflows.model import CONDITION_TYPES, Condition

Predicate = Callable[[Mapping[str, Any]], bool]

_MISSING = object()


class Predicates:
    """Predicates by name: ``tw.workflows.predicates.register("is_large", fn)``."""

    def __init__(self) -> None:
        self._by_name: dict[str, Predicate] = {}

    def register(self, name: str, fn: Predicate | None = None) -> Any:
        """``register("name", fn)``, or as a decorator ``@predicates.register("name")``."""
        if not isinstance(name, str) or not name:
            raise InvalidInput("predicate name", name, "a non-empty string")

        def add(func: Predicate) -> Predicate:
            if not callable(func):
                raise InvalidInput(f"predicate {name!r}", func, "a callable")
            self._by_name[name] = func
            return func

        return add(fn) if fn is not None else add

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> Predicate:
        try:
            return self._by_name[name]
        except KeyError:
            raise InvalidInput("predicate", name, "a registered predicate name") from None

    def names(self) -> list[str]:
        return sorted(self._by_name)


def lookup(document: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or _MISSING."""
    value: Any = document
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


def problems(cond: Condition, predicates: Predicates) -> list[str]:
    """What is wrong with a condition (empty when it is well formed)."""
    if cond.type not in CONDITION_TYPES:
        return [f"type: got {cond.type!r}, expected one of {', '.join(CONDITION_TYPES)}"]
    found: list[str] = []
    if cond.type == "predicate":
        if not cond.name:
            found.append("name: missing, expected a registered predicate name")
        elif cond.name not in predicates:
            found.append(f"name: unknown predicate {cond.name!r} (registered: "
                         f"{', '.join(predicates.names()) or 'none'})")
        return found
    if not isinstance(cond.field, str) or not cond.field:
        found.append(f"field: got {cond.field!r}, expected a dotted path such as input.size")
    elif cond.field.split(".")[0] not in ("input", "params", "results"):
        found.append(f"field: got {cond.field!r}, expected a path starting with input., "
                     "params. or results.")
    if cond.type == "value_greater_than" and (
            isinstance(cond.value, bool) or not isinstance(cond.value, int | float)):
        found.append(f"value: got {cond.value!r}, expected a number")
    if cond.type == "value_equals" and cond.value is None:
        found.append("value: missing, expected the value to compare with")
    return found


def evaluate(cond: Condition, document: Mapping[str, Any], predicates: Predicates) -> bool:
    if cond.type == "predicate":
        assert cond.name is not None
        outcome = bool(predicates.get(cond.name)(document))
    else:
        assert cond.field is not None
        value = lookup(document, cond.field)
        if cond.type == "field_exists":
            outcome = value is not _MISSING
        elif cond.type == "value_equals":
            outcome = value is not _MISSING and value == cond.value
        elif cond.type == "value_greater_than":
            outcome = (isinstance(value, int | float) and not isinstance(value, bool)
                       and value > cond.value)
        else:
            raise InvalidInput("when.type", cond.type, f"one of {', '.join(CONDITION_TYPES)}")
    return outcome != cond.negate
