"""Map-reduce functions: the contract, and the four built-ins of the seed.

A function turns a partition's items into a *partial* (a combiner's output: a small
JSON value, never the partition itself) and merges every partition's partial into the
final result. A partial's size depends on the params (rules, metrics, distinct groups),
not on the partition's size, so a map task's memory stays bounded.

    check(params)                      validate up front; InvalidInput names the field
    prepare(params, ctx)  -> params    once per job, before any partition (outputs)
    map_partition(params, items, ctx) -> partial   one partition, streamed
    reduce(params, partials, ctx)     -> result    once every partition is done

Partials travel as JSON: a reduce sees lists where a map built tuples.
"""

from __future__ import annotations

import copy
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

import re2  # type: ignore[import-untyped]

from taskworks.errors import InvalidInput
from taskworks.mapreduce.datasets import DatasetInfo, Datasets, write_items
from taskworks.mapreduce.expressions import Expression
from taskworks.mapreduce.partitions import Item, Partition
from taskworks.store.engine import Store

TYPE_NAMES = ("int", "float", "str", "bool", "list", "dict")
DEFAULT_MAX_SAMPLES = 10
MAX_SAMPLES_LIMIT = 1000
AGGREGATES = ("sum", "count", "avg", "min", "max")
NORMALIZE_OPS = ("lower", "strip")
#: a validation pattern's length: RE2's time is linear in the text, its memory and
#: compile time grow with the pattern
MAX_PATTERN_LENGTH = 1000


@dataclass(frozen=True)
class JobContext:
    """What a function may touch besides its items: the store and the input dataset."""

    store: Store
    dataset: DatasetInfo
    job_id: str


@dataclass(frozen=True)
class MapContext:
    store: Store
    dataset: DatasetInfo
    job_id: str
    partition: Partition


class MapReduceFunction(ABC):
    """A named map (with its combiner) and reduce. Subclass it, or register plain
    callables with ``FunctionRegistry.custom``."""

    name: str
    #: whether a reduce over some of the partitions means something (a job may then
    #: run with ``on_partition_failure="reduce"``)
    partial_results: bool = True

    def check(self, params: Mapping[str, Any]) -> None:  # noqa: B027  (optional hook)
        """Raise InvalidInput for params this function cannot run with."""

    def prepare(self, params: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
        """Called once before the partitions run; returns the params they will see."""
        return dict(params)

    @abstractmethod
    def map_partition(self, params: Mapping[str, Any], items: Iterable[Item],
                      ctx: MapContext) -> Any:
        """The partial of one partition's items (JSON-able, small)."""

    @abstractmethod
    def reduce(self, params: Mapping[str, Any], partials: Sequence[Any],
               ctx: JobContext) -> Any:
        """The final result from every partition's partial (in partition order)."""


# -- params helpers ----------------------------------------------------------------------


def _expect_mapping(params: object, field: str = "params") -> Mapping[str, Any]:
    if not isinstance(params, Mapping):
        raise InvalidInput(field, params, "a JSON object")
    return params


def _only_keys(params: Mapping[str, Any], allowed: Sequence[str], field: str = "params"
               ) -> None:
    for key in params:
        if key not in allowed:
            raise InvalidInput(f"{field}.{key}", params[key],
                               f"a known parameter: {', '.join(allowed)}")


def _field_list(value: object, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidInput(field, value, "a list of field names")
    return list(value)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(value: object, field: str) -> float | int:
    if not _is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
        raise InvalidInput(field, value, "a finite number")
    assert isinstance(value, int | float)
    return value


def _max_samples(params: Mapping[str, Any]) -> int:
    value = params.get("max_error_samples", DEFAULT_MAX_SAMPLES)
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 0 <= value <= MAX_SAMPLES_LIMIT:
        raise InvalidInput("params.max_error_samples", value,
                           f"an integer from 0 to {MAX_SAMPLES_LIMIT}")
    return value


def _fields(data: Any) -> Mapping[str, Any]:
    return data if isinstance(data, Mapping) else {}


class _Samples:
    """Per rule: how many errors, and the first ``cap`` of them by item_index. Taking
    the lowest indexes makes the sample the same however the data is partitioned."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.rules: dict[str, dict[str, Any]] = {}

    def add(self, rule: str, index: int, message: str) -> None:
        entry = self.rules.setdefault(rule, {"count": 0, "samples": []})
        entry["count"] += 1
        if len(entry["samples"]) < self.cap:  # items arrive in index order
            entry["samples"].append([index, message])

    @staticmethod
    def merge(cap: int, parts: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for part in parts:
            for rule, entry in part.items():
                into = merged.setdefault(rule, {"count": 0, "samples": []})
                into["count"] += entry["count"]
                into["samples"].extend(entry["samples"])
        for entry in merged.values():
            entry["samples"] = [{"item_index": i, "message": m}
                                for i, m in sorted(entry["samples"])[:cap]]
        return dict(sorted(merged.items()))


# -- validation --------------------------------------------------------------------------


def type_matches(value: object, type_name: str) -> bool:
    """JSON-minded checks: bool is not an int; an int is a float (JSON has one number)."""
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "float":
        return _is_number(value)
    return isinstance(value, _KINDS[type_name])


_KINDS: dict[str, type] = {"str": str, "bool": bool, "list": list, "dict": dict}


class Pattern(Protocol):
    """A compiled RE2 pattern (google-re2 has no type hints)."""

    @property
    def pattern(self) -> str: ...

    def fullmatch(self, text: str) -> object | None: ...


def _re2_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is an InvalidInput, not a stderr line
    return options


_RE2_OPTIONS = _re2_options()


def compile_pattern(regex: object, field: str) -> Pattern:
    """``regex`` compiled by RE2, which matches in time linear in the text (no
    backtracking: Python's ``re`` takes seconds on ``(a+)+b`` against 30 characters), or
    InvalidInput naming ``field``. RE2 refuses what needs backtracking: backreferences
    and lookarounds."""
    if not isinstance(regex, str):
        raise InvalidInput(field, regex, "a regular expression")
    if len(regex) > MAX_PATTERN_LENGTH:
        raise InvalidInput(field, f"{regex[:40]}... ({len(regex):,} characters)",
                           f"a regular expression of at most {MAX_PATTERN_LENGTH:,} characters")
    try:
        compiled: Pattern = re2.compile(regex, _RE2_OPTIONS)  # cached by re2 (lru_cache)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise InvalidInput(field, regex, f"a valid regular expression in RE2 syntax, "
                           f"linear time: no backreferences or lookarounds ({reason})") from None
    return compiled


@dataclass(frozen=True)
class ValidationRules:
    required: list[str]
    types: dict[str, str]
    patterns: dict[str, Pattern]
    ranges: dict[str, tuple[float | int | None, float | int | None]]
    max_samples: int

    @classmethod
    def parse(cls, params: object) -> ValidationRules:
        p = _expect_mapping(params)
        _only_keys(p, ("required_fields", "type_validations", "patterns", "ranges",
                       "max_error_samples"))
        required = _field_list(p.get("required_fields", []), "params.required_fields")
        types = dict(_expect_mapping(p.get("type_validations", {}),
                                     "params.type_validations"))
        for field, name in types.items():
            if name not in TYPE_NAMES:
                raise InvalidInput(f"params.type_validations.{field}", name,
                                   f"a type name: {', '.join(TYPE_NAMES)}")
        patterns = {field: compile_pattern(regex, f"params.patterns.{field}") for field, regex
                    in _expect_mapping(p.get("patterns", {}), "params.patterns").items()}
        ranges: dict[str, tuple[float | int | None, float | int | None]] = {}
        for field, bounds in _expect_mapping(p.get("ranges", {}), "params.ranges").items():
            where = f"params.ranges.{field}"
            b = _expect_mapping(bounds, where)
            _only_keys(b, ("min", "max"), where)
            low = _number(b["min"], f"{where}.min") if b.get("min") is not None else None
            high = _number(b["max"], f"{where}.max") if b.get("max") is not None else None
            if low is None and high is None:
                raise InvalidInput(where, bounds, "min, max or both")
            if low is not None and high is not None and low > high:
                raise InvalidInput(where, bounds, "min <= max")
            ranges[field] = (low, high)
        if not (required or types or patterns or ranges):
            raise InvalidInput("params", dict(p), "at least one rule: required_fields, "
                               "type_validations, patterns or ranges")
        return cls(required, types, patterns, ranges, _max_samples(p))

    def errors(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(rule, message) for each rule the item breaks."""
        found: list[tuple[str, str]] = []
        for field in self.required:
            if field not in data:
                found.append((f"required:{field}", f"missing required field {field!r}"))
        for field, name in self.types.items():
            if field in data and not type_matches(data[field], name):
                found.append((f"type:{field}", f"{field!r} is "
                              f"{type(data[field]).__name__}, expected {name}"))
        for field, pattern in self.patterns.items():
            if field not in data:
                continue
            value = data[field]
            if not isinstance(value, str):
                found.append((f"pattern:{field}", f"{field!r} is not text"))
            elif not pattern.fullmatch(value):
                found.append((f"pattern:{field}",
                              f"{field!r} does not match {pattern.pattern!r}"))
        for field, (low, high) in self.ranges.items():
            if field not in data:
                continue
            value = data[field]
            if not _is_number(value):
                found.append((f"range:{field}", f"{field!r} is not a number"))
            elif (low is not None and value < low) or (high is not None and value > high):
                found.append((f"range:{field}", f"{field!r} = {value} outside [{low}, {high}]"))
        return found


class Validation(MapReduceFunction):
    """Counts valid and invalid items; per rule, how many broke it and a sample."""

    name = "validation"

    def check(self, params: Mapping[str, Any]) -> None:
        ValidationRules.parse(params)

    def map_partition(self, params: Mapping[str, Any], items: Iterable[Item],
                      ctx: MapContext | None = None) -> dict[str, Any]:
        rules = ValidationRules.parse(params)
        samples = _Samples(rules.max_samples)
        total = valid = 0
        for index, data in items:
            total += 1
            found = rules.errors(_fields(data))
            if not found:
                valid += 1
            for rule, message in found:
                samples.add(rule, index, message)
        return {"total": total, "valid": valid, "rules": samples.rules}

    def reduce(self, params: Mapping[str, Any], partials: Sequence[Any],
               ctx: JobContext | None = None) -> dict[str, Any]:
        rules = ValidationRules.parse(params)
        total = sum(p["total"] for p in partials)
        valid = sum(p["valid"] for p in partials)
        return {"total": total, "valid": valid, "invalid": total - valid,
                "errors": _Samples.merge(rules.max_samples, (p["rules"] for p in partials))}


# -- transformation ----------------------------------------------------------------------


@dataclass(frozen=True)
class TransformRules:
    normalize: dict[str, tuple[str, ...]]
    calculated: dict[str, Expression]
    output: str | None
    max_samples: int

    @classmethod
    def parse(cls, params: object) -> TransformRules:
        p = _expect_mapping(params)
        _only_keys(p, ("normalize_fields", "calculated_fields", "output", "max_error_samples",
                       "output_dataset_id"))
        raw = p.get("normalize_fields", [])
        normalize: dict[str, tuple[str, ...]] = {}
        if isinstance(raw, list):
            normalize = {f: NORMALIZE_OPS for f in _field_list(raw, "params.normalize_fields")}
        else:
            for field, ops in _expect_mapping(raw, "params.normalize_fields").items():
                ops_list = [ops] if isinstance(ops, str) else ops
                if not isinstance(ops_list, list) or not ops_list \
                        or not all(op in NORMALIZE_OPS for op in ops_list):
                    raise InvalidInput(f"params.normalize_fields.{field}", ops,
                                       f"a list of: {', '.join(NORMALIZE_OPS)}")
                normalize[field] = tuple(ops_list)
        calculated = {
            field: Expression(source, f"params.calculated_fields.{field}")
            for field, source in _expect_mapping(p.get("calculated_fields", {}),
                                                 "params.calculated_fields").items()}
        output = p.get("output")
        if output is not None and (not isinstance(output, str) or not output.strip()):
            raise InvalidInput("params.output", output, "a dataset name")
        if not (normalize or calculated):
            raise InvalidInput("params", dict(p), "normalize_fields, calculated_fields or both")
        return cls(normalize, calculated, output, _max_samples(p))

    def apply(self, data: Mapping[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """The transformed item, and (field, error) for each calculation that failed
        (its field is then null, as in the seed, but counted and sampled)."""
        out = dict(data)
        for field, ops in self.normalize.items():
            value = out.get(field)
            if isinstance(value, str):
                for op in ops:
                    value = value.lower() if op == "lower" else value.strip()
                out[field] = value
        errors: list[tuple[str, str]] = []
        for field, expression in self.calculated.items():
            try:
                out[field] = expression.evaluate(out)
            except Exception as exc:  # any error of a user's expression on a user's item
                out[field] = None
                errors.append((field, f"{type(exc).__name__}: {exc}"))
        return out, errors


class Transformation(MapReduceFunction):
    """Writes each item, normalised and with calculated fields, into a new dataset at the
    same item_index (so partitions need no coordination); reduce marks it ready."""

    name = "transformation"
    #: its output dataset needs every item: a gap would break the dense item_index
    partial_results = False

    def check(self, params: Mapping[str, Any]) -> None:
        TransformRules.parse(params)

    def prepare(self, params: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
        rules = TransformRules.parse(params)
        name = rules.output or f"{ctx.dataset.name}_transformed"
        columns = list(dict.fromkeys([*ctx.dataset.columns, *rules.calculated]))
        output = Datasets(ctx.store).create_output(
            name, f"job {ctx.job_id}: transformation of {ctx.dataset.name}", columns)
        return {**params, "output": name, "output_dataset_id": output.id}

    def map_partition(self, params: Mapping[str, Any], items: Iterable[Item],
                      ctx: MapContext) -> dict[str, Any]:
        rules = TransformRules.parse(params)
        samples = _Samples(rules.max_samples)

        def transformed() -> Iterable[Item]:
            for index, data in items:
                out, errors = rules.apply(_fields(data))
                for field, message in errors:
                    samples.add(field, index, message)
                yield index, out

        with ctx.store.session() as session:
            written = write_items(session, int(params["output_dataset_id"]),
                                  ctx.partition.start, ctx.partition.end, transformed())
        return {"written": written, "errors": samples.rules}

    def reduce(self, params: Mapping[str, Any], partials: Sequence[Any],
               ctx: JobContext) -> dict[str, Any]:
        rules = TransformRules.parse(params)
        written = sum(p["written"] for p in partials)
        columns = list(dict.fromkeys([*ctx.dataset.columns, *rules.calculated]))
        Datasets(ctx.store).finish_output(int(params["output_dataset_id"]), written, columns)
        return {"output_dataset": params["output"], "items": written,
                "calculation_errors": _Samples.merge(rules.max_samples,
                                                     (p["errors"] for p in partials))}


# -- analysis ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    value_rule: tuple[str, Any] | None
    range_rule: tuple[str, float | int | None, float | int | None] | None

    def matches(self, data: Mapping[str, Any]) -> bool:
        if self.value_rule is not None:
            field, expected = self.value_rule
            if field not in data or data[field] != expected:
                return False
        if self.range_rule is not None:
            field, low, high = self.range_rule
            value = data.get(field)
            if not _is_number(value):
                return False
            if (low is not None and value < low) or (high is not None and value > high):
                return False
        return True


@dataclass(frozen=True)
class AnalysisRules:
    numeric: list[str]
    factors: dict[str, float | int]
    categories: dict[str, Category]

    @classmethod
    def parse(cls, params: object) -> AnalysisRules:
        p = _expect_mapping(params)
        _only_keys(p, ("numeric_fields", "normalization_factors", "categorization_rules"))
        numeric = _field_list(p.get("numeric_fields", []), "params.numeric_fields")
        factors: dict[str, float | int] = {}
        for field, factor in _expect_mapping(p.get("normalization_factors", {}),
                                             "params.normalization_factors").items():
            where = f"params.normalization_factors.{field}"
            if field not in numeric:
                raise InvalidInput(where, factor, "a factor for one of numeric_fields")
            if _number(factor, where) == 0:
                raise InvalidInput(where, factor, "a non-zero number")
            factors[field] = factor
        categories: dict[str, Category] = {}
        for name, rules in _expect_mapping(p.get("categorization_rules", {}),
                                           "params.categorization_rules").items():
            categories[name] = cls._category(rules, f"params.categorization_rules.{name}")
        if not (numeric or categories):
            raise InvalidInput("params", dict(p), "numeric_fields, categorization_rules "
                               "or both")
        return cls(numeric, factors, categories)

    @staticmethod
    def _category(rules: object, where: str) -> Category:
        r = _expect_mapping(rules, where)
        _only_keys(r, ("field_value", "field_range"), where)
        if not r:
            raise InvalidInput(where, rules, "field_value, field_range or both")
        value_rule = range_rule = None
        if "field_value" in r:
            spec = _expect_mapping(r["field_value"], f"{where}.field_value")
            _only_keys(spec, ("field", "value"), f"{where}.field_value")
            if not isinstance(spec.get("field"), str) or "value" not in spec:
                raise InvalidInput(f"{where}.field_value", dict(spec), "{field, value}")
            value_rule = (spec["field"], spec["value"])
        if "field_range" in r:
            spec = _expect_mapping(r["field_range"], f"{where}.field_range")
            _only_keys(spec, ("field", "min", "max"), f"{where}.field_range")
            if not isinstance(spec.get("field"), str):
                raise InvalidInput(f"{where}.field_range.field", spec.get("field"),
                                   "a field name")
            low = _number(spec["min"], f"{where}.field_range.min") \
                if spec.get("min") is not None else None
            high = _number(spec["max"], f"{where}.field_range.max") \
                if spec.get("max") is not None else None
            range_rule = (spec["field"], low, high)
        return Category(value_rule, range_rule)


def _stat_add(stat: dict[str, Any], value: float | int) -> None:
    stat["count"] += 1
    stat["sum"] += value
    stat["min"] = value if stat["min"] is None else min(stat["min"], value)
    stat["max"] = value if stat["max"] is None else max(stat["max"], value)


def _stat_merge(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    into["count"] += other["count"]
    into["sum"] += other["sum"]
    for key, pick in (("min", min), ("max", max)):
        if other[key] is not None:
            into[key] = other[key] if into[key] is None else pick(into[key], other[key])


def _new_stat() -> dict[str, Any]:
    return {"count": 0, "sum": 0, "min": None, "max": None}


def _stat_final(stat: Mapping[str, Any]) -> dict[str, Any]:
    count = stat["count"]
    return {"count": count, "sum": stat["sum"], "avg": stat["sum"] / count if count else None,
            "min": stat["min"], "max": stat["max"]}


class Analysis(MapReduceFunction):
    """count, sum, avg, min, max per numeric field (and divided by its normalization
    factor), and how many items fall in each category."""

    name = "analysis"

    def check(self, params: Mapping[str, Any]) -> None:
        AnalysisRules.parse(params)

    def map_partition(self, params: Mapping[str, Any], items: Iterable[Item],
                      ctx: MapContext | None = None) -> dict[str, Any]:
        rules = AnalysisRules.parse(params)
        metrics = {field: _new_stat() for field in rules.numeric}
        categories = dict.fromkeys(rules.categories, 0)
        total = 0
        for _index, data in items:
            total += 1
            fields = _fields(data)
            for field in rules.numeric:
                value = fields.get(field)
                if _is_number(value):
                    _stat_add(metrics[field], value)
            for name, category in rules.categories.items():
                if category.matches(fields):
                    categories[name] += 1
        return {"total": total, "metrics": metrics, "categories": categories}

    def reduce(self, params: Mapping[str, Any], partials: Sequence[Any],
               ctx: JobContext | None = None) -> dict[str, Any]:
        rules = AnalysisRules.parse(params)
        metrics = {field: _new_stat() for field in rules.numeric}
        categories = dict.fromkeys(rules.categories, 0)
        for partial in partials:
            for field, stat in partial["metrics"].items():
                _stat_merge(metrics[field], stat)
            for name, count in partial["categories"].items():
                categories[name] += count
        result: dict[str, Any] = {}
        for field, stat in metrics.items():
            final = _stat_final(stat)
            factor = rules.factors.get(field)
            if factor is not None:
                low, high = final["min"], final["max"]
                if factor < 0:
                    low, high = high, low
                final["normalization_factor"] = factor
                final["normalized"] = {
                    "sum": final["sum"] / factor,
                    "avg": None if final["avg"] is None else final["avg"] / factor,
                    "min": None if low is None else low / factor,
                    "max": None if high is None else high / factor}
            result[field] = final
        return {"total": sum(p["total"] for p in partials), "metrics": result,
                "categories": categories}


# -- aggregation -------------------------------------------------------------------------


@dataclass(frozen=True)
class AggregationRules:
    group_by: list[str]
    aggregates: dict[str, tuple[str, ...]]

    @classmethod
    def parse(cls, params: object) -> AggregationRules:
        p = _expect_mapping(params)
        _only_keys(p, ("group_by", "aggregate_fields"))
        group_by = _field_list(p.get("group_by", []), "params.group_by")
        aggregates: dict[str, tuple[str, ...]] = {}
        for field, ops in _expect_mapping(p.get("aggregate_fields", {}),
                                          "params.aggregate_fields").items():
            ops_list = [ops] if isinstance(ops, str) else ops
            if not isinstance(ops_list, list) or not ops_list \
                    or not all(op in AGGREGATES for op in ops_list):
                raise InvalidInput(f"params.aggregate_fields.{field}", ops,
                                   f"one or a list of: {', '.join(AGGREGATES)}")
            aggregates[field] = tuple(dict.fromkeys(ops_list))
        if not group_by and not aggregates:
            raise InvalidInput("params", dict(p), "group_by, aggregate_fields or both")
        return cls(group_by, aggregates)

    def columns(self) -> list[str]:
        return [*self.group_by, "rows",
                *(f"{field}_{op}" for field, ops in self.aggregates.items() for op in ops)]


#: ``json.dumps(key, sort_keys=True)`` without building an encoder per call
_group_key = json.JSONEncoder(sort_keys=True).encode


class Aggregation(MapReduceFunction):
    """A grouped table: per distinct group_by key, the row count and each aggregate.
    count counts non-null values; sum, avg, min and max use the numeric values only."""

    name = "aggregation"

    def check(self, params: Mapping[str, Any]) -> None:
        AggregationRules.parse(params)

    def map_partition(self, params: Mapping[str, Any], items: Iterable[Item],
                      ctx: MapContext | None = None) -> dict[str, Any]:
        rules = AggregationRules.parse(params)
        group_by = rules.group_by
        groups: dict[str, dict[str, Any]] = {}
        #: per group key: the group and its (field, stat) pairs, for the per-item loop
        found: dict[str, tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]] = {}
        for _index, data in items:
            fields = _fields(data)
            key = [fields.get(field) for field in group_by]
            text = _group_key(key)
            entry = found.get(text)
            if entry is None:
                group = groups[text] = {
                    "key": key, "rows": 0,
                    "fields": {f: {**_new_stat(), "present": 0} for f in rules.aggregates}}
                entry = found[text] = (group, list(group["fields"].items()))
            group, pairs = entry
            group["rows"] += 1
            for field, stat in pairs:  # _stat_add inlined: a third of the map's time
                value = fields.get(field)
                if value is None:
                    continue
                stat["present"] += 1
                if value.__class__ is bool or not isinstance(value, int | float):
                    continue
                stat["count"] += 1
                stat["sum"] += value
                low, high = stat["min"], stat["max"]
                if low is None or value < low:
                    stat["min"] = value
                if high is None or value > high:
                    stat["max"] = value
        return {"groups": list(groups.values())}

    def reduce(self, params: Mapping[str, Any], partials: Sequence[Any],
               ctx: JobContext | None = None) -> dict[str, Any]:
        rules = AggregationRules.parse(params)
        groups: dict[str, dict[str, Any]] = {}
        for partial in partials:
            for group in partial["groups"]:
                into = groups.get(_group_key(group["key"]))
                if into is None:  # a copy: never change the caller's partials
                    groups[_group_key(group["key"])] = copy.deepcopy(group)
                    continue
                into["rows"] += group["rows"]
                for field, stat in group["fields"].items():
                    _stat_merge(into["fields"][field], stat)
                    into["fields"][field]["present"] += stat["present"]
        rows = []
        for key in sorted(groups):
            group = groups[key]
            row: dict[str, Any] = dict(zip(rules.group_by, group["key"], strict=True))
            row["rows"] = group["rows"]
            for field, ops in rules.aggregates.items():
                stat = group["fields"][field]
                final = {**_stat_final(stat), "count": stat["present"]}
                for op in ops:
                    row[f"{field}_{op}"] = final[op]
            rows.append(row)
        return {"group_by": rules.group_by, "columns": rules.columns(), "rows": rows}


# -- custom ------------------------------------------------------------------------------

#: a custom map: (params, items as (item_index, data) pairs) -> partial
CustomMap = Callable[[Mapping[str, Any], Iterable[Item]], Any]
#: a custom reduce: (params, partials in partition order) -> result
CustomReduce = Callable[[Mapping[str, Any], Sequence[Any]], Any]
CustomCheck = Callable[[Mapping[str, Any]], None]


class CustomFunction(MapReduceFunction):
    """A map and a reduce given as plain callables (``FunctionRegistry.custom``)."""

    def __init__(self, name: str, map_fn: CustomMap, reduce_fn: CustomReduce,
                 check_fn: CustomCheck | None = None) -> None:
        self.name = name
        self._map = map_fn
        self._reduce = reduce_fn
        self._check = check_fn

    def check(self, params: Mapping[str, Any]) -> None:
        _expect_mapping(params)
        if self._check is not None:
            self._check(params)

    def map_partition(self, params: Mapping[str, Any], items: Iterable[Item],
                      ctx: MapContext | None = None) -> Any:
        return self._map(params, items)

    def reduce(self, params: Mapping[str, Any], partials: Sequence[Any],
               ctx: JobContext | None = None) -> Any:
        return self._reduce(params, partials)


BUILTINS: tuple[type[MapReduceFunction], ...] = (Validation, Transformation, Analysis,
                                                 Aggregation)
