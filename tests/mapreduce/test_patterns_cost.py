"""Validation patterns run on RE2: linear time in the text, whatever the pattern.

Python's ``re`` backtracks: ``(a+)+b`` took 1.2 s at 24 characters, four times more per
two more. The hostile matches run in a fresh interpreter under a timeout (a backtracking
match in C does not see signals), so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import pytest

from taskworks.errors import InvalidInput
from taskworks.mapreduce.functions.params import MAX_PATTERN_LENGTH, ValidationParams
from taskworks.mapreduce.functions.validation import rule_errors
from taskworks.mapreduce.registry import FunctionRegistry
from tests.mapreduce.test_expressions_cost import isolated

#: the errors of one item of 5,000 'a' and a 'c' against each pattern of argv[1]
MATCH = """
import json, sys
from taskworks.mapreduce.functions.params import ValidationParams
from taskworks.mapreduce.functions.validation import rule_errors
out = []
for regex in json.loads(sys.argv[1]):
    rules = ValidationParams.parse({"patterns": {"s": regex}})
    out.append(rule_errors(rules, {"s": "a" * 5000 + "c"}))
print(json.dumps(out))
"""


def test_catastrophic_patterns_complete_in_linear_time() -> None:
    hostile = ["(a+)+b", "(a|a)*b", "(a|aa)+b", "(a*)*b", r"(\w+\s?)*b", "(.*a){12}b"]
    outcomes = isolated(MATCH, hostile)
    for regex, errors in zip(hostile, outcomes, strict=True):
        assert errors == [["pattern:s", f"'s' does not match {regex!r}"]], regex


@pytest.mark.parametrize(("regex", "expected"), [
    (r"(a)\1", "invalid escape sequence: \\1"),           # backreference
    (r"(?P<x>a)(?P=x)", "invalid perl operator: (?P"),    # named backreference
    ("(?=a)a", "invalid perl operator: (?="),             # lookahead
    ("a(?!b)", "invalid perl operator: (?!"),             # negative lookahead
    ("(?<=a)b", "invalid perl operator: (?<"),            # lookbehind
    ("[a-z", "missing ]"),
])
def test_backtracking_features_are_refused_up_front(regex: str, expected: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        FunctionRegistry().get("validation").check({"patterns": {"code": regex}})
    assert caught.value.field == "params.patterns.code"
    message = str(caught.value)
    assert "a valid regular expression in RE2 syntax" in message
    assert "no backreferences or lookarounds" in message
    assert expected in message


def test_a_pattern_longer_than_the_cap_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        ValidationParams.parse({"patterns": {"s": "a" * (MAX_PATTERN_LENGTH + 1)}})
    assert caught.value.field == "params.patterns.s"
    assert f"at most {MAX_PATTERN_LENGTH:,} characters" in str(caught.value)
    assert ValidationParams.parse({"patterns": {"s": "a" * MAX_PATTERN_LENGTH}}).patterns


@pytest.mark.parametrize(("regex", "matches", "does_not"), [
    (r"[^@\s]+@[^@\s]+\.[A-Za-z]+", "ann@example.org", "ann@example"),
    (r"[a-z]+@[a-z]+\.com", "bob@mail.com", "Bob@mail.com"),
    (r"\d{4}-\d{2}-\d{2}", "2024-05-01", "2024-5-01"),
    (r"(?i)[a-z]+", "MiXeD", "mixed1"),
    (r"\p{L}+", "héllo", "héllo!"),         # \w is ASCII-only in RE2: \p{L} for letters
    (r"(?P<area>\d{3})-\d{4}", "555-1234", "5551234"),
    (r"a|b", "b", "ab"),                    # the whole text must match (fullmatch)
])
def test_ordinary_patterns_still_work(regex: str, matches: str, does_not: str) -> None:
    rules = ValidationParams.parse({"patterns": {"s": regex}})
    assert rule_errors(rules, {"s": matches}) == []
    assert rule_errors(rules, {"s": does_not}) == [("pattern:s", f"'s' does not match {regex!r}")]
    assert rule_errors(rules, {"s": 5}) == [("pattern:s", "'s' is not text")]


def test_a_pattern_is_compiled_once_not_per_partition() -> None:
    params = {"patterns": {"s": "[a-z]+"}}
    # each partition parses the params again: RE2's cache hands back the same program
    assert ValidationParams.parse(params).patterns["s"] \
        is ValidationParams.parse(params).patterns["s"]
