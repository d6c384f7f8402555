"""CSV and JSONL files as rows, each cost bounded before it is paid.

A dataset file is anyone's upload (POST /api/datasets), so what reading a row costs must
not depend on what the file says:

- **a line** is read ``MAX_LINE_CHARS`` + 2 characters at most (``readline(limit)``
  decodes 8 KiB chunks): a 1 GiB line is refused after its first mebibyte, never held
  whole. A CSV field is held to ``csv.field_size_limit()`` (128 Ki characters) by the
  csv module, across quoted newlines too;
- **JSON nesting** deeper than ``MAX_JSON_DEPTH`` is refused by a scan of the brackets
  (a regex skipping strings, run only on a line with that many opening brackets) before
  ``json.loads``, whose recursion would otherwise raise RecursionError;
- **numbers**: an integer of more than ``MAX_INT_DIGITS`` digits (``int()`` of it is
  quadratic, and CPython refuses it with a ValueError from deep inside the parser), a
  number no float holds (``1e999`` would be stored as Infinity, which no JSON answer can
  carry) and JSON's ``NaN``/``Infinity`` literals, in CSV cells and JSON values alike.

Such a row stops the import with ``RowRefused``, an ``InvalidInput`` naming the line and
the field: the CLI prints one line and exits 2, the API answers 422, nothing is stored.
Rows that are merely malformed (not JSON, a wrong field count) stay ``BadRow``s, all
reported together.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from taskworks.errors import RowRefused

#: characters in one line (a JSONL record or a physical CSV line), its ending aside
MAX_LINE_CHARS = 1 << 20
#: levels of JSON arrays and objects in one record (``{"a": 1}`` is 1)
MAX_JSON_DEPTH = 100
#: digits in one integer (CPython's own default limit for int() of a text, pinned here
#: so that PYTHONINTMAXSTRDIGITS does not change what an import accepts)
MAX_INT_DIGITS = 4300

_INT = re.compile(r"[+-]?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[+-]?(([0-9]+\.[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[0-9]+[eE][+-]?[0-9]+)")
#: a JSON string token, or one bracket: strings are skipped so their brackets do not count
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[][{}]')


@dataclass(frozen=True)
class BadRow:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class _Unfit(Exception):
    """A number over the limits; ``expected`` says which."""

    def __init__(self, text: str, expected: str) -> None:
        super().__init__(text, expected)
        self.text = text
        self.expected = expected


def _excerpt(text: str, keep: int = 40) -> str:
    return text if len(text) <= keep else f"{text[:keep]}... ({len(text):,} characters)"


def _integer(text: str) -> int:
    digits = len(text.lstrip("+-"))
    expected = f"an integer of at most {MAX_INT_DIGITS:,} digits"
    if digits > MAX_INT_DIGITS:
        raise _Unfit(text, f"{expected} (this one has {digits:,})")
    try:
        return int(text)
    except ValueError:  # the interpreter's own limit is lower (PYTHONINTMAXSTRDIGITS)
        raise _Unfit(text, f"an integer of at most {sys.get_int_max_str_digits():,} "
                     "digits (this interpreter's limit)") from None


def _float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _Unfit(text, "a number a float can hold (at most about 1.8e308)")
    return number


def infer_value(value: str) -> Any:
    """A CSV cell as JSON: '' is null, integers and decimals are numbers, the rest text.
    Integers with leading zeros ('007', zip codes) stay text. Raises _Unfit for a number
    over the limits."""
    if value == "":
        return None
    if _INT.fullmatch(value):
        return _integer(value)
    if _FLOAT.fullmatch(value):
        return _float(value)
    return value


class CountingReader(io.RawIOBase):
    """Counts the bytes read from a binary file, for the progress bar."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        read = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        self.count += read or 0
        return read or 0


def text_stream(raw: io.RawIOBase, fmt: str) -> io.TextIOWrapper:
    """The file as text, as each reader wants its line endings (csv parses them itself)."""
    return io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8-sig",
                            newline="" if fmt == "csv" else None)


def _lines(stream: io.TextIOBase, max_chars: int) -> Iterator[tuple[int, str]]:
    """Numbered lines; one longer than ``max_chars`` raises RowRefused having read at most
    ``max_chars`` + 2 characters of it (room for a "\\r\\n" ending)."""
    number = 0
    while line := stream.readline(max_chars + 2):
        number += 1
        if len(line.rstrip("\r\n")) > max_chars:
            raise RowRefused(number, None, f"{line[:40]}... (over {max_chars:,} characters)",
                             f"lines of at most {max_chars:,} characters")
        yield number, line


def csv_rows(stream: io.TextIOBase, infer: bool, max_line: int = MAX_LINE_CHARS
             ) -> Iterator[tuple[int, Any]]:
    """(line, item or BadRow); the line is where the row ends (quoted newlines count)."""
    reader = csv.reader(line for _, line in _lines(stream, max_line))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        yield reader.line_num, BadRow(reader.line_num, f"header: {exc}")
        return
    if not header or all(not name.strip() for name in header):
        yield 1, BadRow(1, "no header row (the first row names the columns)")
        return
    names = [name.strip() for name in header]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates or "" in names:
        problem = f"duplicate columns {duplicates}" if duplicates else "an empty column name"
        yield reader.line_num, BadRow(reader.line_num, f"header has {problem}")
        return
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # the reader cannot resume after this
            yield reader.line_num, BadRow(reader.line_num, str(exc))
            return
        if not row:  # a blank line
            continue
        if len(row) != len(names):
            yield reader.line_num, BadRow(reader.line_num,
                                          f"{len(row)} fields, expected {len(names)}")
            continue
        item = dict(zip(names, row, strict=True))
        if infer:
            for name, value in item.items():
                try:
                    item[name] = infer_value(value)
                except _Unfit as unfit:
                    raise RowRefused(reader.line_num, name, _excerpt(unfit.text, 20),
                                     unfit.expected) from None
        yield reader.line_num, item


def _too_deep(text: str) -> tuple[int, str | None] | None:
    """(depth reached, the top-level key it is under) when ``text`` nests deeper than
    MAX_JSON_DEPTH, else None. Linear, and free for a line with few brackets."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return None
    depth = 0
    key: str | None = None
    last = ""
    for match in _JSON_TOKEN.finditer(text):
        piece = match.group()
        if piece[0] == '"':
            last = piece
        elif piece in "[{":
            depth += 1
            if depth == 2 and text.lstrip().startswith("{"):
                key = last  # the member of the top-level object that nests
            if depth > MAX_JSON_DEPTH:
                return depth, _decoded(key)
        else:
            depth -= 1
    return None


def _decoded(token: str | None) -> str | None:
    try:
        return None if token is None else _excerpt(str(json.loads(token)))
    except ValueError:
        return _excerpt(token or "")


class _Marked:
    """Stands for an unfit number in a second, naming parse (see _loads)."""

    def __init__(self, unfit: _Unfit) -> None:
        self.unfit = unfit


def _refuse_constant(token: str) -> Any:
    raise _Unfit(token, "a finite number (NaN and Infinity are not JSON)")


def _marking(parse: Any) -> Any:
    def hook(token: str) -> Any:
        try:
            return parse(token)
        except _Unfit as exc:
            return _Marked(exc)
    return hook


# built once: json.loads(text, **hooks) would build a decoder per line (3x slower).
# Integers stay on json's C path while the interpreter refuses long ones itself (its
# ValueError is caught below): a Python hook per integer only when it does not
_FAST = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_float)
_CHECKED = json.JSONDecoder(parse_constant=_refuse_constant, parse_int=_integer,
                            parse_float=_float)
_NAMING = json.JSONDecoder(parse_constant=_marking(_refuse_constant),
                           parse_int=_marking(_integer), parse_float=_marking(_float))


def _first_marked(item: Any) -> tuple[str | None, _Unfit] | None:
    """The path (``a.b[2]``) and the reason of the first unfit number in ``item``.
    Iterative: the depth is bounded already, but this must not be what fails on it."""
    stack: list[tuple[Any, str]] = [(item, "")]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _Marked):
            return path or None, value.unfit
        if isinstance(value, dict):
            stack.extend((v, f"{path}.{k}" if path else str(k))
                         for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(value))))
    return None


def _loads(text: str, line: int) -> Any:
    """json.loads with the number limits; a refused line is parsed again, its unfit
    numbers marked, to name the field."""
    fast = 0 < sys.get_int_max_str_digits() <= MAX_INT_DIGITS
    try:
        return (_FAST if fast else _CHECKED).decode(text)
    except json.JSONDecodeError:
        raise
    except (_Unfit, ValueError):  # ValueError: over the interpreter's own int limit
        found = _first_marked(_NAMING.decode(text))
    except RecursionError:  # deeper than the stack allows, though within MAX_JSON_DEPTH
        raise RowRefused(line, None, _excerpt(text), "JSON nested less deep") from None
    if found is None:  # cannot happen: the same text, the same hooks
        raise RowRefused(line, None, _excerpt(text), "numbers within the limits")
    path, unfit = found
    raise RowRefused(line, path, _excerpt(unfit.text, 20), unfit.expected)


def jsonl_rows(stream: io.TextIOBase, max_line: int = MAX_LINE_CHARS
               ) -> Iterator[tuple[int, Any]]:
    """(line, item or BadRow)."""
    for line_no, line in _lines(stream, max_line):
        if not line.strip():
            continue
        text = line.rstrip("\r\n")
        deep = _too_deep(text)
        if deep is not None:
            raise RowRefused(line_no, deep[1], _excerpt(text),
                             f"JSON nested at most {MAX_JSON_DEPTH} levels deep")
        try:
            item = _loads(text, line_no)
        except json.JSONDecodeError as exc:
            yield line_no, BadRow(line_no, f"not JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(item, dict):
            yield line_no, BadRow(line_no, f"a JSON {type(item).__name__}, expected an object")
            continue
        yield line_no, item
