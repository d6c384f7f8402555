"""Safe expressions for calculated fields, evaluated by simpleeval, never ``eval``.

An expression is checked when the job's params are validated, before any work starts: it
must parse as one Python expression built only from literals, item field names,
arithmetic, comparisons, ``and``/``or``/``not``, ``x if c else y``, subscripts and calls
of the functions in FUNCTIONS. Attribute access (``x.__class__``), names starting with
``_`` (``__import__``), lambdas, comprehensions and any other function are refused with
an error that says which part is not allowed, and so is an expression longer than
MAX_EXPRESSION_LENGTH, with more than MAX_NODES values and operations, or nested deeper
than MAX_DEPTH. At run time simpleeval evaluates the same tree with OPERATORS and
FUNCTIONS, which refuse before computing anything that would exceed MAX_INT_BITS or
MAX_TEXT_LENGTH: the C-level work of a huge ``**`` ignores soft time limits, so the only
bound is not to start it. A field an item lacks reads as ``None``.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import simpleeval  # type: ignore[import-untyped]

from taskworks.errors import InvalidInput


def _lower(value: str) -> str:
    return value.lower()


def _upper(value: str) -> str:
    return value.upper()


def _strip(value: str) -> str:
    return value.strip()


#: the source text, before parsing: bounds the parser's work and every literal
MAX_EXPRESSION_LENGTH = 1000
#: values and operations (AST expression nodes): bounds the work per item, as an
#: expression has no loops
MAX_NODES = 256
#: nesting (``a + b + c`` nests one level per ``+``): simpleeval recurses two or three
#: Python frames per level, and the recursion limit is 1,000 frames
MAX_DEPTH = 100
#: any integer an operator or function makes (about 1,233 digits; far below the 4,300
#: digits past which Python can no longer turn it into text, hence JSON)
MAX_INT_BITS = 4096
#: any text an operator makes (simpleeval's own MAX_STRING_LENGTH default)
MAX_TEXT_LENGTH = 100_000
#: round(x, n): n beyond this computes 10 ** |n| for nothing
MAX_ROUND_DIGITS = 1000


def _about(size: float) -> str:
    # never format a huge int: past 4,300 digits that raises ValueError itself
    return f"about {size:,.0f}" if size < 1e15 else "over 10**15"


def _too_big(bits: float, what: str) -> NoReturn:
    raise simpleeval.NumberTooHigh(f"{what} would make an integer of {_about(bits)} bits; "
                                   f"the limit is {MAX_INT_BITS:,} bits")


def _too_long(length: int, what: str) -> NoReturn:
    raise simpleeval.IterableTooLong(f"{what} would make a text or list of {_about(length)} "
                                     f"items; the limit is {MAX_TEXT_LENGTH:,}")


def _checked(value: Any, what: str) -> Any:
    """``value``, unless it is an integer over MAX_INT_BITS (only for operations whose
    cost is linear: the costly ones are refused before they run)."""
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        _too_big(value.bit_length(), what)
    return value


def _is_sequence(value: object) -> bool:
    return isinstance(value, str | bytes | list | tuple)


def _add(a: Any, b: Any) -> Any:
    if _is_sequence(a) and _is_sequence(b) and len(a) + len(b) > MAX_TEXT_LENGTH:
        _too_long(len(a) + len(b), "+")
    return _checked(a + b, "+")


def _sub(a: Any, b: Any) -> Any:
    return _checked(a - b, "-")


def _mult(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int):
        bits = a.bit_length() + b.bit_length()  # a product has at most this many
        if bits > MAX_INT_BITS:
            _too_big(bits, "*")
        return a * b
    text, times = (a, b) if isinstance(b, int) else (b, a)
    if isinstance(times, int) and isinstance(text, list | tuple):
        # a list's repeats share their items: its text (str()) could be any size
        raise simpleeval.FeatureNotAvailable("repeating a list (list * n) is not allowed")
    if isinstance(times, int) and isinstance(text, str | bytes) \
            and len(text) * times > MAX_TEXT_LENGTH:
        _too_long(len(text) * times, "*")
    return a * b


def _pow(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
        # float(b) overflows past 1e308: then b itself is the estimate (|a| >= 2)
        bits = b * math.log2(abs(a)) + 1 if b < 1e15 else b
        if bits > MAX_INT_BITS:
            _too_big(bits, "**")
    return a**b


def _lshift(a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and a and a.bit_length() + b > MAX_INT_BITS:
        _too_big(a.bit_length() + b, "<<")
    return a << b


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, str | bytes):
        # printf-style formatting: '%0999999999d' % 1 is a gigabyte
        raise simpleeval.FeatureNotAvailable("text % value (formatting) is not allowed")
    return a % b


def _int(*args: Any) -> Any:
    return _checked(int(*args), "int()")  # int('1' * 5000, 2) parses to 5000 bits


def _round(number: Any, ndigits: Any = None) -> Any:
    if isinstance(ndigits, int) and abs(ndigits) > MAX_ROUND_DIGITS:
        raise simpleeval.NumberTooHigh(f"round() to {_about(abs(ndigits))} digits; the "
                                       f"limit is {MAX_ROUND_DIGITS:,} either way")
    return round(number) if ndigits is None else round(number, ndigits)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len, "str": str, "int": _int, "float": float, "bool": bool, "abs": abs,
    "round": _round, "min": min, "max": max, "lower": _lower, "upper": _upper,
    "strip": _strip,
}

#: simpleeval's operators with ours where the cost can grow past linear: simpleeval's
#: own limits bound the operands (a base and an exponent of 4,000,000 pass), not the result
OPERATORS: dict[type[ast.AST], Callable[..., Any]] = {
    **simpleeval.DEFAULT_OPERATORS,
    ast.Add: _add, ast.Sub: _sub, ast.Mult: _mult, ast.Pow: _pow, ast.LShift: _lshift,
    ast.Mod: _mod,
    ast.RShift: operator.rshift,  # only shrinks: no need for simpleeval's cap on its base
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
        self._evaluator = simpleeval.SimpleEval(operators=dict(OPERATORS),
                                                functions=dict(FUNCTIONS), names=_Fields())

    def evaluate(self, fields: Mapping[str, Any]) -> Any:
        self._evaluator.names = _Fields(fields)
        return self._evaluator.eval(self.source, previously_parsed=self._parsed)


def check(source: object, field: str = "expression") -> None:
    """Raise InvalidInput naming ``field`` if ``source`` is not a safe expression."""
    if not isinstance(source, str) or not source.strip():
        raise InvalidInput(field, source, "an expression (text)")
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise InvalidInput(field, f"{source[:40]}... ({len(source):,} characters)",
                           f"an expression of at most {MAX_EXPRESSION_LENGTH:,} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise InvalidInput(field, source, f"one Python expression ({exc.msg})") from None
    except (ValueError, RecursionError, MemoryError) as exc:  # a NUL byte; the parser's
        raise InvalidInput(field, source, f"one Python expression ({exc})") from None
    _check_size(tree, source, field)
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


def _check_size(tree: ast.Expression, source: str, field: str) -> None:
    """Refuse a tree too large or too deep to evaluate in bounded time and stack."""
    nodes = sum(isinstance(node, ast.expr) for node in ast.walk(tree))
    if nodes > MAX_NODES:
        raise InvalidInput(field, source, f"a safe expression: at most {MAX_NODES} values "
                           f"and operations (it has {nodes})")
    stack = [(tree.body, 1)]
    while stack:  # iterative: the tree may be deeper than Python's recursion limit
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidInput(field, source, f"a safe expression: nested at most "
                               f"{MAX_DEPTH} deep")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node)
                     if isinstance(child, ast.expr))
