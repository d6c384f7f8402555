"""A journal row's values as a database takes them: NUL characters stripped, and what
a refusal of them looks like (a write that would fail the same way on every retry)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    ProgrammingError,
    SQLAlchemyError,
    StatementError,
)

__all__ = ["cause", "strip_nul", "values_refused"]

#: PostgreSQL SQLSTATE classes of a statement refused for the values it carries: 22 data
#: exception (too long for its column, a malformed number or date), 23 integrity (NULL in
#: a NOT NULL column), 54 program limit (an index entry too large)
_REFUSED_CLASSES = frozenset({"22", "23", "54"})
#: and the class-42 states about a value's type; the rest of class 42 (a missing table or
#: column, a permission) is the schema's fault, which a migration fixes: the rows wait
_REFUSED_STATES = frozenset({"42804", "42846", "42P18"})
def strip_nul(value: Any) -> Any:
    """``value`` without NUL characters in its strings, nested ones included: PostgreSQL's
    text columns refuse them (jsonb refuses ``\\u0000`` too), and one exception message
    holding one failed its whole batch. Removed rather than replaced, so that a value
    never grows past its column's length."""
    if isinstance(value, str):
        return _without_nul(value)
    if isinstance(value, dict):
        return {_strip_item(k): _strip_item(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strip_item(v) for v in value]
    return value


def _without_nul(text: str) -> str:
    return text.replace("\x00", "") if "\x00" in text else text


def _strip_item(value: Any) -> Any:
    """One item of a row: a journal row is a flat dict of scalars, so the exact type
    checks come first (a recursive ``strip_nul`` per value was 30 us of a task's CPU)."""
    kind = type(value)
    if kind is str:
        return _without_nul(value)
    if kind in _NO_STRINGS:
        return value
    return strip_nul(value)


#: types whose values hold no string
_NO_STRINGS = frozenset({int, float, bool, type(None), datetime})


def values_refused(exc: BaseException) -> bool:
    """Whether a write failed because of the values it carried, so that it would fail the
    same way however often it is retried. False when the database is unreachable, locked
    or not migrated yet, or the connection dropped: the same rows can succeed later."""
    if not isinstance(exc, SQLAlchemyError):
        return True  # TypeError/ValueError: the driver could not encode a value
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return False
        state = getattr(exc.orig, "sqlstate", None)  # psycopg's; sqlite3 has none
        if state:
            return state[:2] in _REFUSED_CLASSES or state in _REFUSED_STATES
        # refused before reaching the server (psycopg: NUL in text, a type it cannot
        # adapt) or by SQLite (NOT NULL, a type it cannot bind); connection failures,
        # "database is locked" and "no such table" are OperationalErrors
        return isinstance(exc, DataError | IntegrityError | ProgrammingError)
    # raised while converting a value for the statement (SQLite's DateTime given a str);
    # pool timeouts and disconnects are SQLAlchemyErrors but not StatementErrors
    return isinstance(exc, StatementError)


def cause(exc: BaseException) -> str:
    """The first line of the driver's message: the next ones (PostgreSQL's DETAIL and
    CONTEXT, SQLAlchemy's [parameters: ...]) can hold the row's values, arguments too."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


