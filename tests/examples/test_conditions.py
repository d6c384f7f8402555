"""The condition evaluator: the patterns guide's rules, and predicates by registered name only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from examples import conditions, patterns
from examples.conditions import PREDICATES, evaluate, predicate
from taskworks.errors import InvalidInput

DATA = {"plan": "pro", "orders": 12, "email": "ana@acme.io", "flag": True, "note": None}


@pytest.mark.parametrize(("rule", "params", "expected"), [
    ("value_equals", {"field": "plan", "value": "pro"}, True),
    ("value_equals", {"field": "plan", "value": "free"}, False),
    # the patterns guide's data.get(field) == value called a missing field equal to None
    ("value_equals", {"field": "missing", "value": None}, False),
    ("value_equals", {"field": "note", "value": None}, True),
    ("value_greater_than", {"field": "orders", "threshold": 10}, True),
    ("value_greater_than", {"field": "orders", "threshold": 12}, False),
    ("value_greater_than", {"field": "orders", "threshold": 11.5}, True),
    # the patterns guide defaulted a missing field to 0 and compared strings with numbers
    ("value_greater_than", {"field": "missing", "threshold": -1}, False),
    ("value_greater_than", {"field": "plan", "threshold": 0}, False),
    ("value_greater_than", {"field": "flag", "threshold": 0}, False),
    ("field_exists", {"field": "note"}, True),
    ("field_exists", {"field": "missing"}, False),
    ("custom_function", {"function": "is_business_email"}, True),
    ("custom_function", {"function": "is_business_email", "free_domains": ["acme.io"]}, False),
    ("custom_function", {"function": "inactive_for_days"}, False),
])
def test_rules(rule: str, params: dict[str, Any], expected: bool) -> None:
    assert evaluate(DATA, rule, params) is expected


def test_unknown_predicate_is_refused_with_the_known_names() -> None:
    with pytest.raises(InvalidInput) as caught:
        evaluate(DATA, "custom_function", {"function": "os.system"})
    assert caught.value.field == "custom_function.function"
    assert caught.value.value == "os.system"
    assert "is_business_email" in caught.value.expected
    assert "inactive_for_days" in caught.value.expected


def test_module_functions_are_not_predicates() -> None:
    # the patterns guide's globals().get(name) would have found these
    for name in ("evaluate", "check", "predicate", "register", "create_tables"):
        with pytest.raises(InvalidInput, match="registered predicate"):
            evaluate(DATA, "custom_function", {"function": name})


@pytest.mark.parametrize(("rule", "params", "field"), [
    ("regex", {"field": "plan"}, "condition type"),
    ("value_equals", {"field": "plan"}, "value_equals.params"),
    ("value_equals", ["plan", "pro"], "value_equals.params"),
    ("value_greater_than", {"field": "orders", "threshold": "10"},
     "value_greater_than.params.threshold"),
    ("value_greater_than", {"field": "orders", "threshold": float("nan")},
     "value_greater_than.params.threshold"),
    ("field_exists", {"field": 3}, "field_exists.params.field"),
    ("custom_function", {}, "custom_function.params"),
])
def test_malformed_conditions_name_the_field(rule: str, params: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        evaluate(DATA, rule, params)
    assert caught.value.field == field


def test_a_name_is_registered_once() -> None:
    @predicate("tests.always")
    def always(data: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
        return True

    try:
        assert evaluate({}, "custom_function", {"function": "tests.always"}) is True
        predicate("tests.always")(always)  # the same function again: harmless

        with pytest.raises(InvalidInput, match="not registered yet"):
            @predicate("tests.always")
            def other(data: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
                return False
    finally:
        del PREDICATES["tests.always"]


def test_the_examples_predicates_are_registered() -> None:
    assert PREDICATES["is_business_email"] is patterns.is_business_email
    assert conditions.RULES == ("value_equals", "value_greater_than", "field_exists",
                                "custom_function")
