"""validation: counts valid and invalid items; per rule, how many broke it and a sample."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from taskworks.mapreduce.functions.base import (
    JobContext,
    MapContext,
    MapReduceFunction,
    Samples,
    fields_of,
)
from taskworks.mapreduce.functions.params import ValidationParams, type_matches
from taskworks.mapreduce.partitions import Item
from taskworks.schema import is_number

__all__ = ["Validation", "rule_errors"]


def rule_errors(rules: ValidationParams, data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(rule, message) for each rule the item breaks."""
    found: list[tuple[str, str]] = []
    for field in rules.required_fields:
        if field not in data:
            found.append((f"required:{field}", f"missing required field {field!r}"))
    for field, name in rules.type_validations.items():
        if field in data and not type_matches(data[field], name):
            found.append((f"type:{field}", f"{field!r} is "
                          f"{type(data[field]).__name__}, expected {name}"))
    for field, pattern in rules.patterns.items():
        if field not in data:
            continue
        value = data[field]
        if not isinstance(value, str):
            found.append((f"pattern:{field}", f"{field!r} is not text"))
        elif not pattern.fullmatch(value):
            found.append((f"pattern:{field}", f"{field!r} does not match {pattern.pattern!r}"))
    for field, bounds in rules.ranges.items():
        if field not in data:
            continue
        value, low, high = data[field], bounds.min, bounds.max
        if not is_number(value):
            found.append((f"range:{field}", f"{field!r} is not a number"))
        elif (low is not None and value < low) or (high is not None and value > high):
            found.append((f"range:{field}", f"{field!r} = {value} outside [{low}, {high}]"))
    return found


class Validation(MapReduceFunction):
    name = "validation"

    def check(self, params: Mapping[str, Any]) -> None:
        ValidationParams.parse(params)

    def map_partition(self, params: Mapping[str, Any], items: Iterable[Item],
                      ctx: MapContext | None = None) -> dict[str, Any]:
        rules = ValidationParams.parse(params)
        samples = Samples(rules.max_error_samples)
        total = valid = 0
        for index, data in items:
            total += 1
            found = rule_errors(rules, fields_of(data))
            if not found:
                valid += 1
            for rule, message in found:
                samples.add(rule, index, message)
        return {"total": total, "valid": valid, "rules": samples.rules}

    def reduce(self, params: Mapping[str, Any], partials: Sequence[Any],
               ctx: JobContext | None = None) -> dict[str, Any]:
        rules = ValidationParams.parse(params)
        total = sum(p["total"] for p in partials)
        valid = sum(p["valid"] for p in partials)
        return {"total": total, "valid": valid, "invalid": total - valid,
                "errors": Samples.merge(rules.max_error_samples, (p["rules"] for p in partials))}
