"""Calculated-field expressions have a bounded cost: what would be costly is refused,
before it is computed, with a message naming the limit (the item's field then fails, as
any failing expression does), or up front when the expression itself is too large.

The hostile expressions run in a fresh interpreter under a timeout: the C-level work of
``4000000 ** 4000000`` (57 s) ignores signals, so a regression must fail by timeout
rather than hang the suite. Nothing is timed: each case must be a refusal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from taskworks.errors import InvalidInput
from taskworks.mapreduce.expressions import (
    MAX_DEPTH,
    MAX_EXPRESSION_LENGTH,
    MAX_NODES,
    Expression,
)
from taskworks.mapreduce.functions.params import TransformationParams
from taskworks.mapreduce.functions.transformation import transform
from taskworks.mapreduce.registry import FunctionRegistry
from tests.support.workers import ROOT

#: evaluates each expression of argv[2] over the fields of argv[1]: [kind, message]
EVALUATE = """
import json, sys
from taskworks.mapreduce.expressions import Expression
fields, out = json.loads(sys.argv[1]), []
for source in json.loads(sys.argv[2]):
    try:
        out.append(["ok", repr(Expression(source).evaluate(fields))[:80]])
    except Exception as exc:
        out.append([type(exc).__name__, str(exc)])
print(json.dumps(out))
"""


def isolated(code: str, *args: Any, timeout: float = 20) -> Any:
    """The JSON ``code`` prints, run in a fresh interpreter killed after ``timeout``
    (generous: the refusals take microseconds, the interpreter's start a second)."""
    try:
        done = subprocess.run([sys.executable, "-c", code, *map(json.dumps, args)],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        done = None
    if done is None:
        pytest.fail(f"not refused within {timeout} s: the costly work was started")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_refused(fields: dict[str, Any], cases: dict[str, tuple[str, str]]) -> None:
    outcomes = isolated(EVALUATE, fields, list(cases))
    for (source, (kind, expected)), (got_kind, message) in zip(cases.items(), outcomes,
                                                                strict=True):
        assert (got_kind, expected in message) == (kind, True), (source, got_kind, message)


INT_LIMIT = "the limit is 4,096 bits"
TEXT_LIMIT = "the limit is 100,000"


def test_huge_integers_are_refused_before_they_are_computed() -> None:
    assert_refused({"x": 4_000_000, "y": 4_000_000}, {
        "4000000**4000000": ("NumberTooHigh", INT_LIMIT),  # simpleeval alone: 57 s
        "x ** y": ("NumberTooHigh", INT_LIMIT),
        "9**99999 * 9**99999 * 9**99999": ("NumberTooHigh", INT_LIMIT),
        "9**999999 * 9**999999": ("NumberTooHigh", INT_LIMIT),
        # each power is allowed (1,268 bits): their product is not
        "9**400 * 9**400 * 9**400 * 9**400": ("NumberTooHigh", "* would make an integer"),
        "10**4000000 // 3": ("NumberTooHigh", INT_LIMIT),
        "x ** (10**400)": ("NumberTooHigh", INT_LIMIT),
        "1 << 10**9": ("NumberTooHigh", INT_LIMIT),
        "x << 5000": ("NumberTooHigh", INT_LIMIT),
        "2 ** 4096": ("NumberTooHigh", "about 4,097 bits"),
        "2 ** 4095 + 2 ** 4095": ("NumberTooHigh", INT_LIMIT),
        "int('1' * 5000, 2)": ("NumberTooHigh", INT_LIMIT),
        "round(5, -10**7)": ("NumberTooHigh", "the limit is 1,000 either way"),
    })


def test_huge_texts_are_refused_before_they_are_built() -> None:
    assert_refused({"s": "x" * 60_000, "tags": ["a" * 1000]}, {
        "'a' * 10**9": ("IterableTooLong", TEXT_LIMIT),
        "10**9 * 'a'": ("IterableTooLong", TEXT_LIMIT),
        "s * 2": ("IterableTooLong", TEXT_LIMIT),
        "s + s": ("IterableTooLong", TEXT_LIMIT),
        "tags * 100000": ("FeatureNotAvailable", "repeating a list"),
        "'%0999999999d' % 1": ("FeatureNotAvailable", "formatting) is not allowed"),
    })


def test_a_refused_item_fails_under_its_field_naming_the_limit() -> None:
    code = """
import json
from taskworks.mapreduce.functions.params import TransformationParams
from taskworks.mapreduce.functions.transformation import transform
rules = TransformationParams.parse({"calculated_fields": {"big": "x ** y", "ok": "x + 1"}})
out, errors = transform(rules, {"x": 4000000, "y": 4000000})
print(json.dumps([out, errors]))
"""
    out, errors = isolated(code)
    assert out["big"] is None
    assert out["ok"] == 4_000_001  # the other fields still compute
    [(field, message)] = errors
    assert field == "big"
    assert message.startswith("NumberTooHigh: ** would make an integer of about")
    assert INT_LIMIT in message


@pytest.mark.parametrize(("source", "expected"), [
    ("x" * (MAX_EXPRESSION_LENGTH + 1), f"at most {MAX_EXPRESSION_LENGTH:,} characters"),
    ("+".join(["1"] * 300), f"at most {MAX_NODES} values and operations (it has 599)"),
    ("-" * 100 + "1", f"nested at most {MAX_DEPTH} deep"),
    ("not " * 100 + "x", f"nested at most {MAX_DEPTH} deep"),
    ("min(" * 120 + "1" + ")" * 120, f"nested at most {MAX_DEPTH} deep"),
    ("1\x00", "one Python expression"),
])
def test_too_costly_to_parse_is_refused_up_front(source: str, expected: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        FunctionRegistry().get("transformation").check({"calculated_fields": {"x": source}})
    assert caught.value.field == "params.calculated_fields.x"
    assert expected in str(caught.value)


@pytest.mark.parametrize(("source", "expected"), [
    ("2 ** 10", 1024),
    ("2 ** 4095 > 0", True),
    ("9**400 * 9**400 * 9**400 > 0", True),
    ("x * 1.5", 3.0),
    ("2 ** -3", 0.125),
    ("2.0 ** 0.5 > 1.41", True),
    ("(-1) ** 10**100", 1),
    ("-7 // 2", -4),
    ("10 % 3", 1),
    ("1 << 10", 1024),
    ("1024 >> 3", 128),
    ("x >> 10**100", 0),
    ("'ab' * 3", "ababab"),
    ("3 * 'ab'", "ababab"),
    ("'a' + 'b'", "ab"),
    ("tags + tags", ["y", "y"]),
    ("int('ff', 16) + int(2.9)", 257),
    ("round(1234, -2)", 1200),
    ("round(2.675, 2)", 2.67),
    ("round(3.7)", 4),
    ("len(name) if name is not None else 0", 3),
    ("1" + " + 1" * 90, 91),  # 181 values and operations, 91 deep: under the caps
])
def test_ordinary_expressions_still_work(source: str, expected: Any) -> None:
    assert Expression(source).evaluate({"x": 2, "name": "abc", "tags": ["y"]}) == expected


def test_transformation_still_computes() -> None:
    rules = TransformationParams.parse({"calculated_fields": {
        "total": "price * qty", "label": "upper(name) + '-' + str(qty)"}})
    out, errors = transform(rules, {"price": 2.5, "qty": 4, "name": "ab"})
    assert errors == []
    assert (out["total"], out["label"]) == (10.0, "AB-4")
