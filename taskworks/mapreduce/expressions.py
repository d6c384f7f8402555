"""Safe expressions for calculated fields, evaluated by simpleeval, never ``eval``.

An expression is checked when the job's params are validated, before any work starts: it
must parse as one Python expression built only from literals, item field names,
arithmetic, comparisons, ``and``/``or``/``not``, ``x if c else y``, subscripts and calls
of the functions in FUNCTIONS. Attribute access (``x.__class__``), names starting with
``_`` (``__import__``), lambdas, comprehensions and any other function are refused with
an error that says which part is not allowed. At run time simpleeval evaluates the same
tree again with its own limits (huge powers, huge strings), and a field an item lacks
reads as ``None``.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from typing import Any

import simpleeval  # type: ignore[import-untyped]

from taskworks.errors import InvalidInput


def _lower(value: str) -> str:
    return value.lower()


def _upper(value: str) -> str:
    return value.upper()


def _strip(value: str) -> str:
    return value.strip()


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len, "str": str, "int": int, "float": float, "bool": bool, "abs": abs,
    "round": round, "min": min, "max": max, "lower": _lower, "upper": _upper,
    "strip": _strip,
}

_ALLOWED_NODES: tuple[type[ast.AST], ...] = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call,
    ast.Name, ast.Load, ast.Constant, ast.Subscript, ast.Slice, ast.operator, ast.unaryop,
    ast.boolop, ast.cmpop,
)
_REFUSED_REASONS: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access (a.b)",
    ast.Lambda: "lambda",
    ast.NamedExpr: "assignment (:=)",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions", ast.GeneratorExp: "comprehensions",
    ast.Starred: "unpacking (*x)",
    ast.JoinedStr: "f-strings",
}


class _Fields(dict[str, Any]):
    """An item's fields for simpleeval; a missing field reads as None."""

    def __missing__(self, key: str) -> None:
        return None


class Expression:
    """A checked expression; ``evaluate(item)`` computes it over one item's fields."""

    def __init__(self, source: str, field: str = "expression") -> None:
        self.source = source
        self.field = field
        check(source, field)
        self._parsed = simpleeval.SimpleEval.parse(source)
        self._evaluator = simpleeval.SimpleEval(functions=dict(FUNCTIONS), names=_Fields())

    def evaluate(self, fields: Mapping[str, Any]) -> Any:
        self._evaluator.names = _Fields(fields)
        return self._evaluator.eval(self.source, previously_parsed=self._parsed)


def check(source: object, field: str = "expression") -> None:
    """Raise InvalidInput naming ``field`` if ``source`` is not a safe expression."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidInput(field, source, "an expression (text)")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise InvalidInput(field, source, f"one Python expression ({exc.msg})") from None
    for node in ast.walk(tree):
        refused = _REFUSED_REASONS.get(type(node))
        if refused:
            raise InvalidInput(field, source, f"a safe expression: {refused} is not allowed")
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            raise InvalidInput(field, source, f"a safe expression: the name {node.id!r} is "
                               "not allowed (names starting with '_' are refused)")
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else None
            if name not in FUNCTIONS:
                raise InvalidInput(field, source, f"a safe expression: calling "
                                   f"{name or ast.unparse(node.func)!r} is not allowed; "
                                   f"functions: {', '.join(sorted(FUNCTIONS))}")
            if node.keywords:
                raise InvalidInput(field, source, "a safe expression: keyword arguments "
                                   "are not allowed")
        if not isinstance(node, _ALLOWED_NODES):
            raise InvalidInput(field, source, f"a safe expression: "
                               f"{type(node).__name__} is not allowed")
