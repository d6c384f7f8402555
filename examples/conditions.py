"""Conditions on a dict of data (the patterns guide's evaluate_condition), safe by construction.

Rules: ``value_equals`` (field, value), ``value_greater_than`` (field, threshold),
``field_exists`` (field) and ``custom_function`` (function): a predicate registered by
name with ``@predicate("name")``. The patterns guide looked custom functions up with
``globals().get(name)``, which lets data name any function of the module; here only
what was registered on purpose can run, and an unknown name is refused with the list
of known ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from taskworks.errors import InvalidInput

Predicate = Callable[[Mapping[str, Any], Mapping[str, Any]], bool]

#: predicates by name, filled by the @predicate decorator
PREDICATES: dict[str, Predicate] = {}

RULES = ("value_equals", "value_greater_than", "field_exists", "custom_function")


def predicate(name: str) -> Callable[[Predicate], Predicate]:
    """Register ``fn(data, params) -> bool`` under ``name`` for ``custom_function`` rules."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("predicate name", name, "a non-empty string")

    def register(fn: Predicate) -> Predicate:
        known = PREDICATES.get(name)
        # the same function again (a module imported twice) is harmless; another is a clash
        if known is not None and (known.__module__, known.__qualname__) != (
                fn.__module__, fn.__qualname__):
            raise InvalidInput("predicate name", name, "a name not registered yet")
        PREDICATES[name] = fn
        return fn

    return register


def _param(rule: str, params: Mapping[str, Any], key: str) -> Any:
    if key not in params:
        raise InvalidInput(f"{rule}.params", dict(params), f"an object with the key {key!r}")
    return params[key]


def _number(value: object) -> bool:
    # bool is an int to Python, but True > 0.5 is not a comparison anyone means
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def check(rule: str, params: Mapping[str, Any]) -> None:
    """Refuse a malformed condition before anything runs (no half-applied work)."""
    if rule not in RULES:
        raise InvalidInput("condition type", rule, f"one of {', '.join(RULES)}")
    if not isinstance(params, Mapping):
        raise InvalidInput(f"{rule}.params", params, "a JSON object")
    if rule == "custom_function":
        name = _param(rule, params, "function")
        if name not in PREDICATES:
            raise InvalidInput("custom_function.function", name,
                               f"a registered predicate: {', '.join(sorted(PREDICATES)) or '-'}")
        return
    field = _param(rule, params, "field")
    if not isinstance(field, str):
        raise InvalidInput(f"{rule}.params.field", field, "a field name (a string)")
    if rule == "value_equals":
        _param(rule, params, "value")
    elif rule == "value_greater_than" and not _number(_param(rule, params, "threshold")):
        raise InvalidInput("value_greater_than.params.threshold", params["threshold"],
                           "a finite number")


def evaluate(data: Mapping[str, Any], rule: str, params: Mapping[str, Any]) -> bool:
    """Whether ``data`` meets the condition. A missing field never meets a value rule."""
    check(rule, params)
    if rule == "custom_function":
        return bool(PREDICATES[params["function"]](data, params))
    field = params["field"]
    if rule == "field_exists":
        return field in data
    if field not in data:
        return False
    if rule == "value_equals":
        return bool(data[field] == params["value"])
    # value_greater_than: a value that is not a number is not greater than anything
    value = data[field]
    return _number(value) and value > params["threshold"]
