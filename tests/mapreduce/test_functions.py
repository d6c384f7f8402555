"""Every built-in, partitioned (map + combiner + reduce), equals a plain single-process
computation written independently here, whatever the data and the partition size."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskworks.mapreduce.datasets import Datasets
from taskworks.mapreduce.local import run_local
from taskworks.store.engine import Store
from tests.mapreduce.conftest import load

NUMBER = st.integers(-10**6, 10**6) | st.floats(-1e6, 1e6, allow_nan=False)
ITEM = st.fixed_dictionaries({}, optional={
    "id": st.integers(0, 10**9) | st.text(max_size=3),
    "name": st.text(" aAbB\u00c9", max_size=6) | st.none(),
    "email": st.sampled_from(["a@b.com", "x@y.org", "bad", "", "q@r.com"]) | st.integers(),
    "score": NUMBER | st.none() | st.text(max_size=2) | st.booleans(),
    "group": st.sampled_from(["a", "b", "c"]) | st.none() | st.integers(0, 2),
})
DATASETS = st.lists(ITEM, max_size=40)
PRIMES = (2, 3, 5, 7, 11, 13)
PROPERTY = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def partition_sizes(n: int) -> st.SearchStrategy[int]:
    """1, primes, and sizes larger than the dataset."""
    return st.sampled_from((1, *PRIMES)) | st.integers(n + 1, n + 50) | st.integers(1, 40)


def close(a: Any, b: Any) -> bool:
    """Equal, floats within rounding (sums added in another order)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and \
            math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


def numeric(value: Any) -> bool:
    return type(value) in (int, float)


# -- validation --------------------------------------------------------------------------

VALIDATION = {"required_fields": ["id", "name"],
              "type_validations": {"id": "int", "score": "float", "name": "str"},
              "patterns": {"email": r"[a-z]+@[a-z]+\.com"},
              "ranges": {"score": {"min": -1000, "max": 1000}},
              "max_error_samples": 3}


def broken_rules(item: dict[str, Any]) -> list[str]:
    rules = [f"required:{f}" for f in ("id", "name") if f not in item]
    if "id" in item and type(item["id"]) is not int:
        rules.append("type:id")
    if "score" in item and not numeric(item["score"]):
        rules.append("type:score")
    if "name" in item and type(item["name"]) is not str:
        rules.append("type:name")
    if "email" in item and not (isinstance(item["email"], str)
                                and re.fullmatch(r"[a-z]+@[a-z]+\.com", item["email"])):
        rules.append("pattern:email")
    if "score" in item and not (numeric(item["score"]) and -1000 <= item["score"] <= 1000):
        rules.append("range:score")
    return rules


def validation_reference(items: list[dict[str, Any]]) -> dict[str, Any]:
    broken = [broken_rules(item) for item in items]
    by_rule: dict[str, list[int]] = {}
    for index, rules in enumerate(broken):
        for rule in rules:
            by_rule.setdefault(rule, []).append(index)
    valid = sum(1 for rules in broken if not rules)
    return {"total": len(items), "valid": valid, "invalid": len(items) - valid,
            "errors": {rule: (len(indexes), indexes[:3])
                       for rule, indexes in sorted(by_rule.items())}}


def validation_summary(result: dict[str, Any]) -> dict[str, Any]:
    return {**result, "errors": {rule: (e["count"], [s["item_index"] for s in e["samples"]])
                                 for rule, e in result["errors"].items()}}


@PROPERTY
@given(data=st.data(), items=DATASETS)
def test_validation_partitioned_equals_single_process(sqlite_store: Store, data: Any,
                                                      items: list[dict[str, Any]]) -> None:
    size = data.draw(partition_sizes(len(items)), "partition_size")
    info = load(sqlite_store, items)
    result = run_local(sqlite_store, info.name, "validation", VALIDATION, size).result
    assert validation_summary(result) == validation_reference(items)


# -- analysis ----------------------------------------------------------------------------

ANALYSIS = {"numeric_fields": ["score", "id"], "normalization_factors": {"score": -4},
            "categorization_rules": {
                "high": {"field_range": {"field": "score", "min": 100}},
                "group_a": {"field_value": {"field": "group", "value": "a"}},
                "a_low": {"field_value": {"field": "group", "value": "a"},
                          "field_range": {"field": "score", "max": 0}}}}


def stats(values: list[Any]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "sum": 0, "avg": None, "min": None, "max": None}
    return {"count": len(values), "sum": sum(values), "avg": sum(values) / len(values),
            "min": min(values), "max": max(values)}


def analysis_reference(items: list[dict[str, Any]]) -> dict[str, Any]:
    scores = [i["score"] for i in items if numeric(i.get("score"))]
    ids = [i["id"] for i in items if numeric(i.get("id"))]
    score = stats(scores)
    score["normalization_factor"] = -4
    score["normalized"] = {
        "sum": sum(v / -4 for v in scores),
        "avg": sum(scores) / len(scores) / -4 if scores else None,
        "min": min(v / -4 for v in scores) if scores else None,
        "max": max(v / -4 for v in scores) if scores else None}
    return {"total": len(items), "metrics": {"score": score, "id": stats(ids)},
            "categories": {
                "high": sum(1 for i in items if numeric(i.get("score")) and i["score"] >= 100),
                "group_a": sum(1 for i in items if i.get("group") == "a"),
                "a_low": sum(1 for i in items if i.get("group") == "a"
                             and numeric(i.get("score")) and i["score"] <= 0)}}


@PROPERTY
@given(data=st.data(), items=DATASETS)
def test_analysis_partitioned_equals_single_process(sqlite_store: Store, data: Any,
                                                    items: list[dict[str, Any]]) -> None:
    size = data.draw(partition_sizes(len(items)), "partition_size")
    info = load(sqlite_store, items)
    result = run_local(sqlite_store, info.name, "analysis", ANALYSIS, size).result
    expected = analysis_reference(items)
    assert close(result, expected), (result, expected)


# -- aggregation -------------------------------------------------------------------------

AGGREGATION = {"group_by": ["group"],
               "aggregate_fields": {"score": ["sum", "count", "avg", "min", "max"],
                                    "id": "count"}}


def aggregation_reference(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import json

    groups: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault(json.dumps([item.get("group")]), []).append(item)
    rows = []
    for key in sorted(groups):
        members = groups[key]
        scores = stats([m["score"] for m in members if numeric(m.get("score"))])
        rows.append({
            "group": members[0].get("group"), "rows": len(members),
            "score_sum": scores["sum"],
            "score_count": sum(1 for m in members if m.get("score") is not None),
            "score_avg": scores["avg"], "score_min": scores["min"], "score_max": scores["max"],
            "id_count": sum(1 for m in members if m.get("id") is not None)})
    return rows


@PROPERTY
@given(data=st.data(), items=DATASETS)
def test_aggregation_partitioned_equals_single_process(sqlite_store: Store, data: Any,
                                                       items: list[dict[str, Any]]) -> None:
    size = data.draw(partition_sizes(len(items)), "partition_size")
    info = load(sqlite_store, items)
    result = run_local(sqlite_store, info.name, "aggregation", AGGREGATION, size).result
    assert result["columns"] == ["group", "rows", "score_sum", "score_count", "score_avg",
                                 "score_min", "score_max", "id_count"]
    expected = aggregation_reference(items)
    assert close(result["rows"], expected), (result["rows"], expected)


# -- transformation ----------------------------------------------------------------------

TRANSFORMATION = {"normalize_fields": ["name", "email"],
                  "calculated_fields": {"name_length": "len(name) if name is not None else 0",
                                        "double": "score * 2"},
                  "max_error_samples": 2}


def transform_reference(items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                               dict[str, Any]]:
    out = []
    failed: list[int] = []
    for index, item in enumerate(items):
        new = dict(item)
        for field in ("name", "email"):
            if isinstance(new.get(field), str):
                new[field] = new[field].lower().strip()
        new["name_length"] = len(new["name"]) if new.get("name") is not None else 0
        try:
            new["double"] = new.get("score") * 2  # type: ignore[operator]
        except TypeError:
            new["double"] = None
            failed.append(index)
        out.append(new)
    errors = {"double": (len(failed), failed[:2])} if failed else {}
    return out, errors


@PROPERTY
@given(data=st.data(), items=DATASETS)
def test_transformation_partitioned_equals_single_process(sqlite_store: Store, data: Any,
                                                          items: list[dict[str, Any]]) -> None:
    size = data.draw(partition_sizes(len(items)), "partition_size")
    info = load(sqlite_store, items)
    output = f"{info.name}-out"
    result = run_local(sqlite_store, info.name, "transformation",
                       {**TRANSFORMATION, "output": output}, size).result
    expected_items, expected_errors = transform_reference(items)
    assert result["output_dataset"] == output
    assert result["items"] == len(items)
    assert {field: (e["count"], [s["item_index"] for s in e["samples"]])
            for field, e in result["calculation_errors"].items()} == expected_errors
    datasets = Datasets(sqlite_store)
    written = datasets.get(output)
    assert (written.state, written.row_count, written.source) == ("ready", len(items), "job")
    stored = [entry["data"] for entry in datasets.head(output, len(items) + 5)]
    assert close(stored, expected_items)


# -- the same on both stores, fixed data -------------------------------------------------

FIXED = [{"id": i, "name": f" N{i % 4} ", "email": "A@B.com" if i % 3 else "bad",
          "score": (i * 37) % 250 - 50, "group": "abc"[i % 3]} for i in range(50)]
FIXED[7] = {"name": None}
FIXED[20] = {"id": "x", "score": "y", "group": None}


@pytest.mark.parametrize("size", [1, 7, 50, 51])
def test_every_builtin_on_both_stores(store: Store, size: int) -> None:
    info = load(store, FIXED)
    validation = run_local(store, info.name, "validation", VALIDATION, size).result
    assert validation_summary(validation) == validation_reference(FIXED)
    analysis = run_local(store, info.name, "analysis", ANALYSIS, size).result
    assert close(analysis, analysis_reference(FIXED))
    aggregation = run_local(store, info.name, "aggregation", AGGREGATION, size).result
    assert close(aggregation["rows"], aggregation_reference(FIXED))
    run_local(store, info.name, "transformation", TRANSFORMATION, size)
    stored = [e["data"] for e in Datasets(store).head(f"{info.name}_transformed", 100)]
    assert close(stored, transform_reference(FIXED)[0])
