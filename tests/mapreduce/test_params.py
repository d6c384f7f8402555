"""Bad params, functions and expressions are refused up front, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
import simpleeval  # type: ignore[import-untyped]

from taskworks.errors import InvalidInput
from taskworks.mapreduce.datasets import Datasets
from taskworks.mapreduce.expressions import Expression
from taskworks.mapreduce.functions import MapReduceFunction
from taskworks.mapreduce.local import run_local
from taskworks.mapreduce.registry import FunctionRegistry
from taskworks.store.engine import Store
from tests.mapreduce.conftest import load

REGISTRY = FunctionRegistry()


@pytest.mark.parametrize(("function", "params", "field", "expected"), [
    ("validation", {"type_validations": {"id": "integer"}}, "params.type_validations.id",
     "a type name: int, float, str, bool, list, dict"),
    ("validation", {"patterns": {"email": "[a-z"}}, "params.patterns.email",
     "a valid regular expression"),
    ("validation", {"ranges": {"age": {"min": 5, "max": 1}}}, "params.ranges.age", "min <= max"),
    ("validation", {"ranges": {"age": {"min": "0"}}}, "params.ranges.age.min",
     "a finite number"),
    ("validation", {"required_fields": "id"}, "params.required_fields",
     "a list of field names"),
    ("validation", {"required_field": ["id"]}, "params.required_field", "a known parameter"),
    ("validation", {}, "params", "at least one rule"),
    ("validation", [1], "params", "a JSON object"),
    ("validation", {"required_fields": ["a"], "max_error_samples": -1},
     "params.max_error_samples", "an integer from 0 to 1000"),
    ("transformation", {"calculated_fields": {"x": "__import__('os')"}},
     "params.calculated_fields.x", "calling '__import__' is not allowed"),
    ("transformation", {"calculated_fields": {"x": "name.__class__.__mro__"}},
     "params.calculated_fields.x", "attribute access (a.b) is not allowed"),
    ("transformation", {"calculated_fields": {"x": "__builtins__"}},
     "params.calculated_fields.x", "the name '__builtins__' is not allowed"),
    ("transformation", {"calculated_fields": {"x": "[c for c in name]"}},
     "params.calculated_fields.x", "comprehensions is not allowed"),
    ("transformation", {"calculated_fields": {"x": "(lambda: 1)()"}},
     "params.calculated_fields.x", "calling 'lambda: 1' is not allowed"),
    ("transformation", {"calculated_fields": {"x": "open('/etc/passwd')"}},
     "params.calculated_fields.x", "calling 'open' is not allowed"),
    ("transformation", {"calculated_fields": {"x": "len(name"}},
     "params.calculated_fields.x", "one Python expression"),
    ("transformation", {"calculated_fields": {"x": "a = 1"}},
     "params.calculated_fields.x", "one Python expression"),
    ("transformation", {"normalize_fields": {"name": ["upper"]}},
     "params.normalize_fields.name", "a list of: lower, strip"),
    ("analysis", {"numeric_fields": ["a"], "normalization_factors": {"a": 0}},
     "params.normalization_factors.a", "a non-zero number"),
    ("analysis", {"numeric_fields": ["a"], "normalization_factors": {"b": 2}},
     "params.normalization_factors.b", "one of numeric_fields"),
    ("analysis", {"categorization_rules": {"c": {"field_regex": {}}}},
     "params.categorization_rules.c.field_regex", "a known parameter"),
    ("analysis", {"categorization_rules": {"c": {"field_range": {"field": "a", "min": "x"}}}},
     "params.categorization_rules.c.field_range.min", "a finite number"),
    ("aggregation", {"group_by": ["g"], "aggregate_fields": {"v": "median"}},
     "params.aggregate_fields.v", "one or a list of: sum, count, avg, min, max"),
])
def test_bad_params(function: str, params: Any, field: str, expected: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        REGISTRY.get(function).check(params)
    assert caught.value.field == field
    assert expected in str(caught.value)


def test_unknown_function_and_partition_size(sqlite_store: Store) -> None:
    info = load(sqlite_store, [{"a": 1}])
    with pytest.raises(InvalidInput) as caught:
        run_local(sqlite_store, info.name, "nope", {}, 10)
    assert caught.value.field == "function"
    assert "aggregation, analysis, transformation, validation" in str(caught.value)
    with pytest.raises(InvalidInput) as caught:
        run_local(sqlite_store, info.name, "validation", {"required_fields": ["a"]}, 0)
    assert caught.value.field == "partition_size"
    with pytest.raises(InvalidInput) as caught:
        run_local(sqlite_store, "missing", "validation", {"required_fields": ["a"]}, 1)
    assert caught.value.field == "dataset"


def test_unsafe_expression_refused_before_any_work(sqlite_store: Store) -> None:
    info = load(sqlite_store, [{"a": 1}])
    output = f"{info.name}-never"
    with pytest.raises(InvalidInput, match="__import__"):
        run_local(sqlite_store, info.name, "transformation",
                  {"calculated_fields": {"x": "__import__('os').system('true')"},
                   "output": output}, 1)
    assert not Datasets(sqlite_store).exists(output)  # not even the output was created


def test_transformation_output_must_be_new(sqlite_store: Store) -> None:
    info = load(sqlite_store, [{"a": 1}])
    with pytest.raises(InvalidInput) as caught:
        run_local(sqlite_store, info.name, "transformation",
                  {"normalize_fields": ["a"], "output": info.name}, 1)
    assert caught.value.field == "params.output"


def test_expressions_evaluate_safely() -> None:
    assert Expression("len(name) if name is not None else 0").evaluate({"name": "abc"}) == 3
    assert Expression("len(name) if name is not None else 0").evaluate({}) == 0
    assert Expression("round(price / qty, 2)").evaluate({"price": 10, "qty": 3}) == 3.33
    assert Expression("lower(strip(s))[:2]").evaluate({"s": " ABc "}) == "ab"
    assert Expression("'x' in tags and not flag").evaluate({"tags": ["x"], "flag": False})
    with pytest.raises(simpleeval.NumberTooHigh):
        Expression("9 ** 9 ** 9").evaluate({})  # simpleeval's own limits still apply


def test_custom_functions_by_name(sqlite_store: Store) -> None:
    registry = FunctionRegistry()

    def check(params: Any) -> None:
        if "field" not in params:
            raise InvalidInput("params.field", None, "the field to sum")

    registry.custom("sum_field",
                    map=lambda p, items: sum(d.get(p["field"], 0) for _, d in items),
                    reduce=lambda p, partials: sum(partials), check=check)
    info = load(sqlite_store, [{"v": i} for i in range(10)])
    assert run_local(sqlite_store, info.name, "sum_field", {"field": "v"}, 3,
                     registry=registry).result == 45
    with pytest.raises(InvalidInput, match=r"params\.field"):
        run_local(sqlite_store, info.name, "sum_field", {}, 3, registry=registry)
    with pytest.raises(InvalidInput, match="not registered yet"):
        registry.custom("sum_field", map=lambda p, i: 0, reduce=lambda p, q: 0)
    with pytest.raises(InvalidInput) as caught:
        registry.custom("bad name!", map=lambda p, i: 0, reduce=lambda p, q: 0)
    assert caught.value.field == "name"
    assert "sum_field" not in FunctionRegistry()  # registries do not share names
    assert isinstance(registry.get("validation"), MapReduceFunction)
