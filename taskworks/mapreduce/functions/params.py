"""The parameters of the built-in functions, as pydantic models: the library checks a
job's params with them before any work, and the API shows them in its schema.

``Model.parse(params)`` returns the checked params ready to run (patterns compiled,
expressions checked) or raises InvalidInput naming the field (``params.ranges.age``).
Numbers are JSON-minded: ``"0"`` is not a number and ``true`` is not an integer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Protocol, Self, cast

import re2  # type: ignore[import-untyped]
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    GetJsonSchemaHandler,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue, SkipJsonSchema
from pydantic_core import CoreSchema

from taskworks.errors import InvalidInput
from taskworks.mapreduce.expressions import Expression
from taskworks.schema import Strict, finite_number, is_number, refuse, validate

__all__ = ["AGGREGATES", "MAX_PATTERN_LENGTH", "NORMALIZE_OPS", "TYPE_NAMES",
           "AggregationParams", "AnalysisParams", "Category", "FunctionParams", "JobParams",
           "Pattern", "TransformationParams", "ValidationParams", "compile_pattern",
           "type_matches"]

TYPE_NAMES = ("int", "float", "str", "bool", "list", "dict")
DEFAULT_MAX_SAMPLES = 10
MAX_SAMPLES_LIMIT = 1000
AGGREGATES = ("sum", "count", "avg", "min", "max")
NORMALIZE_OPS = ("lower", "strip")
#: a validation pattern's length: RE2's time is linear in the text, its memory and
#: compile time grow with the pattern
MAX_PATTERN_LENGTH = 1000


class FunctionParams(Strict):
    """The params of one built-in function."""

    @classmethod
    def parse(cls, params: object) -> Self:
        return validate(cls, params, "params")


# -- field kinds -------------------------------------------------------------------------


def _field_names(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        refuse("a list of field names", value)
    return list(value)


def _max_samples(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) \
            or not 0 <= value <= MAX_SAMPLES_LIMIT:
        refuse(f"an integer from 0 to {MAX_SAMPLES_LIMIT}", value)
    return value


def _one_or_many(allowed: tuple[str, ...], expected: str) -> Any:
    def check(value: object) -> tuple[str, ...]:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values \
                or not all(v in allowed for v in values):
            refuse(expected, value)
        return tuple(dict.fromkeys(values))
    return BeforeValidator(check)


FieldNames = Annotated[list[str], BeforeValidator(_field_names)]
MaxSamples = Annotated[int, BeforeValidator(_max_samples),
                       Field(description=f"0 to {MAX_SAMPLES_LIMIT}")]
Number = Annotated[float | int, BeforeValidator(finite_number)]


def type_matches(value: object, type_name: str) -> bool:
    """JSON-minded checks: bool is not an int; an int is a float (JSON has one number)."""
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "float":
        return is_number(value)
    return isinstance(value, _KINDS[type_name])


_KINDS: dict[str, type] = {"str": str, "bool": bool, "list": list, "dict": dict}


def _type_name(value: object) -> str:
    if value not in TYPE_NAMES:
        refuse(f"a type name: {', '.join(TYPE_NAMES)}", value)
    assert isinstance(value, str)
    return value


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


def _pattern(value: object) -> Pattern:
    try:
        return compile_pattern(value, "pattern")
    except InvalidInput as exc:
        refuse(exc.expected, exc.value)


def _expression(value: object) -> Expression:
    try:
        return Expression(cast(str, value), "expression")  # refuses what is not text
    except InvalidInput as exc:
        refuse(exc.expected, exc.value)


#: compiled when parsed; text in the schema
RegexPattern = Annotated[Any, BeforeValidator(_pattern),
                         WithJsonSchema({"type": "string", "description": "RE2 syntax"})]
CheckedExpression = Annotated[Any, BeforeValidator(_expression),
                              WithJsonSchema({"type": "string",
                                              "description": "a safe Python expression"})]


# -- validation --------------------------------------------------------------------------


class Bounds(Strict):
    min: Number | None = None
    max: Number | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min is None and self.max is None:
            refuse("min, max or both", {})
        if self.min is not None and self.max is not None and self.min > self.max:
            refuse("min <= max", {"min": self.min, "max": self.max})
        return self


class ValidationParams(FunctionParams):
    """Rules every item is checked against; each broken rule is counted and sampled."""

    required_fields: FieldNames = []
    type_validations: dict[str, Annotated[str, BeforeValidator(_type_name)]] = {}
    patterns: dict[str, RegexPattern] = {}
    ranges: dict[str, Bounds] = {}
    max_error_samples: MaxSamples = DEFAULT_MAX_SAMPLES

    @model_validator(mode="after")
    def _some_rule(self) -> Self:
        if not (self.required_fields or self.type_validations or self.patterns
                or self.ranges):
            refuse("at least one rule: required_fields, type_validations, patterns or "
                   "ranges", {"max_error_samples": self.max_error_samples}
                   if "max_error_samples" in self.model_fields_set else {})
        return self


# -- transformation ----------------------------------------------------------------------


def _normalize_fields(value: object) -> object:
    """A list of field names means every operation on each."""
    if isinstance(value, list):
        return {key: list(NORMALIZE_OPS) for key in _field_names(value)}
    return value


class TransformationParams(FunctionParams):
    """Each item normalised and given calculated fields, written to a new dataset."""

    normalize_fields: Annotated[
        dict[str, Annotated[tuple[str, ...], _one_or_many(
            NORMALIZE_OPS, f"a list of: {', '.join(NORMALIZE_OPS)}")]],
        BeforeValidator(_normalize_fields)] = {}
    calculated_fields: dict[str, CheckedExpression] = {}
    #: the output dataset's name (default: the input's name + "_transformed")
    output: str | None = None
    max_error_samples: MaxSamples = DEFAULT_MAX_SAMPLES
    #: set when the job starts (prepare): the output dataset's id; not the caller's
    output_dataset_id: SkipJsonSchema[int | None] = None

    @model_validator(mode="after")
    def _some_change(self) -> Self:
        if self.output is not None and not self.output.strip():
            refuse("a dataset name", self.output, at=("output",))
        if not (self.normalize_fields or self.calculated_fields):
            refuse("normalize_fields, calculated_fields or both", {})
        return self


# -- analysis ----------------------------------------------------------------------------


class FieldValue(Strict):
    field: str
    value: Any


class FieldRange(Strict):
    field: str
    min: Number | None = None
    max: Number | None = None


class Category(Strict):
    """An item is in the category when it matches every rule given."""

    field_value: FieldValue | None = None
    field_range: FieldRange | None = None

    @model_validator(mode="after")
    def _some_rule(self) -> Self:
        if self.field_value is None and self.field_range is None:
            refuse("field_value, field_range or both", {})
        return self

    def matches(self, data: Mapping[str, Any]) -> bool:
        if self.field_value is not None:
            rule = self.field_value
            if rule.field not in data or data[rule.field] != rule.value:
                return False
        if self.field_range is not None:
            low, high = self.field_range.min, self.field_range.max
            value = data.get(self.field_range.field)
            if not is_number(value):
                return False
            if (low is not None and value < low) or (high is not None and value > high):
                return False
        return True


def _non_zero(value: float | int) -> float | int:
    if value == 0:
        refuse("a non-zero number", value)
    return value


class AnalysisParams(FunctionParams):
    """Statistics per numeric field, and how many items fall in each category."""

    numeric_fields: FieldNames = []
    normalization_factors: dict[str, Annotated[Number, AfterValidator(_non_zero)]] = {}
    categorization_rules: dict[str, Category] = {}

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for field, factor in self.normalization_factors.items():
            if field not in self.numeric_fields:
                refuse("a factor for one of numeric_fields", factor,
                       at=("normalization_factors", field))
        if not (self.numeric_fields or self.categorization_rules):
            refuse("numeric_fields, categorization_rules or both", {})
        return self


# -- aggregation -------------------------------------------------------------------------


class AggregationParams(FunctionParams):
    """A grouped table: per distinct ``group_by`` key, the rows and each aggregate."""

    group_by: FieldNames = []
    aggregate_fields: dict[str, Annotated[tuple[str, ...], _one_or_many(
        AGGREGATES, f"one or a list of: {', '.join(AGGREGATES)}")]] = {}

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not (self.group_by or self.aggregate_fields):
            refuse("group_by, aggregate_fields or both", {})
        return self

    def columns(self) -> list[str]:
        return [*self.group_by, "rows",
                *(f"{field}_{op}" for field, ops in self.aggregate_fields.items()
                  for op in ops)]


# -- a job's params, in a schema ---------------------------------------------------------


class _JobParamsSchema:
    """Documents a job's params as one of the built-ins' models or any object."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # through the handler, the models' nested definitions land where the caller keeps
        # its own (FastAPI: components/schemas), so every $ref resolves
        builtins = [handler(model.__pydantic_core_schema__) for model in (
            ValidationParams, TransformationParams, AnalysisParams, AggregationParams)]
        custom = {"type": "object", "title": "CustomFunctionParams",
                  "description": "a custom function's params: it checks them itself"}
        return {"anyOf": [*builtins, custom], "description": "the function's params: "
                "those of validation, transformation, analysis or aggregation, or a "
                "custom function's"}


#: a job's params where a schema shows them (the API's JobStart): any JSON object, checked
#: by the function when the job starts (``fn.check``), documented with the models above
JobParams = Annotated[dict[str, Any], _JobParamsSchema]
