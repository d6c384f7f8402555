"""The one schema system: pydantic models for definitions and API bodies, and the bridge
from pydantic's errors to taskworks' own (``InvalidInput``: field, value, expected).

A model declares its rules with pydantic (types, ``Field`` bounds, validators); a
validator that refuses a value calls ``refuse(expected, value)`` so that the message says
what was expected in taskworks' words. ``validate`` turns the first problem into an
``InvalidInput`` whose field is the dotted path (``params.ranges.age.min``); ``problems``
lists every problem, for a definition that reports them all at once.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from typing import Any, NoReturn, TypeGuard, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

from taskworks.errors import InvalidInput

__all__ = ["Problem", "Strict", "finite_number", "is_number", "problems", "refuse",
           "validate"]

ModelT = TypeVar("ModelT", bound=BaseModel)

#: a problem: (dotted field, the value found, what was expected)
Problem = tuple[str, object, str]

_REFUSED = "taskworks_refused"
#: what pydantic's own error types mean, in taskworks' words
_EXPECTED = {
    "dict_type": "a JSON object", "model_type": "a JSON object",
    "model_attributes_type": "a JSON object", "dataclass_type": "a JSON object",
    "dataclass_args_type": "a JSON object", "list_type": "a list",
    "string_type": "text", "bool_type": "true or false", "int_type": "an integer",
    "float_type": "a number", "missing": "a value (required)",
}


class Strict(BaseModel):
    """A definition or request body: unknown keys are refused, never ignored."""

    model_config = ConfigDict(extra="forbid")


def refuse(expected: str, value: object = None, at: tuple[str, ...] = ()) -> NoReturn:
    """Refuse a value from inside a validator: ``expected`` is what was wanted;
    ``value`` replaces the input in the message (a shortened one, for long inputs);
    ``at`` names a part below the validated one (a model validator that checks one
    field against another names the field)."""
    raise PydanticCustomError(_REFUSED, "{expected}",
                              {"expected": expected, "value": value, "at": at})


def is_number(value: object) -> TypeGuard[int | float]:
    """JSON-minded: true and false are not numbers."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite_number(value: object) -> float | int:
    """A before-validator: a finite JSON number, taken as given (never "0" -> 0)."""
    if not is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
        refuse("a finite number", value)
    assert isinstance(value, int | float)
    return value


def validate(model: type[ModelT], data: object, root: str) -> ModelT:
    """``data`` as ``model``, or InvalidInput naming the first problem's field under
    ``root`` (the name the caller knows the whole value by)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        field, value, expected = problems(exc, root, data, model)[0]
        raise InvalidInput(field, value, expected) from None


def problems(exc: ValidationError, root: str, data: object, model: type[Any],
             unknown_key: str = "a known parameter") -> list[Problem]:
    """Every problem of ``exc`` (validating ``data`` as ``model``, a pydantic model or
    dataclass), each as (dotted field, value, expected); an unknown key expects
    ``unknown_key`` and the keys that are known."""
    found: list[Problem] = []
    for error in exc.errors():
        ctx = error.get("ctx") or {}
        loc = (*error["loc"], *ctx.get("at", ()))
        field = ".".join(str(part) for part in (root, *loc) if part != "")
        value = error.get("input")
        if error["type"] == _REFUSED:
            expected = str(ctx["expected"])
            value = ctx.get("value", value) if ctx.get("value") is not None else value
        elif error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            allowed = _fields_at(model, loc[:-1])
            expected = f"{unknown_key}: {', '.join(allowed)}"
        elif error["type"] == "value_error":
            # a validator's ValueError (or an InvalidInput raised inside one)
            cause = ctx.get("error")
            expected = getattr(cause, "expected", None) or str(cause)
            value = getattr(cause, "value", value)
        elif error["type"] == "missing":
            value = _value_at(data, loc[:-1])
            expected = f"{loc[-1]} (required)"
        else:
            expected = _EXPECTED.get(error["type"], error["msg"])
        found.append((field, value, expected))
    return found


def _fields_of(kind: Any) -> dict[str, Any] | None:
    """The fields of a pydantic model or dataclass; None for anything else."""
    fields = getattr(kind, "__pydantic_fields__", None) if isinstance(kind, type) else None
    return fields if isinstance(fields, dict) else None


def _fields_at(model: type[Any], loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the model found at ``loc`` inside ``model``."""
    current: Any = model
    for part in loc:
        fields = _fields_of(current)
        if isinstance(current, _Items):
            current = current.model  # ``part`` is a key or an index of the container
        elif fields is not None:
            info = fields.get(str(part))
            current = None if info is None else _model_in(info.annotation)
        else:
            return []
    fields = _fields_of(current)
    return [] if fields is None else [info.alias or name for name, info in fields.items()]


class _Items:
    """A container whose values are models: the next part of a location is a key."""

    def __init__(self, model: Any) -> None:
        self.model = model


def _model_in(annotation: Any) -> Any:
    """What an annotation holds: a model, ``_Items`` of one (a dict's, list's or
    tuple's values), or None; a union gives its first model."""
    if _fields_of(annotation) is not None:
        return annotation
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is typing.Annotated:
        return _model_in(args[0])
    if origin in (typing.Union, types.UnionType):
        return next((m for m in map(_model_in, args) if m is not None), None)
    if origin in (dict, Mapping, list, tuple) and args:
        inner = _model_in(args[-1] if args[-1] is not Ellipsis else args[0])
        return None if inner is None else _Items(inner)
    return None


def _value_at(data: object, loc: tuple[int | str, ...]) -> object:
    for part in loc:
        if isinstance(data, Mapping):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data
