"""The built-in ``taskworks.db_operation`` task (the patterns guide's resilient_database_operation).

One SELECT, INSERT, UPDATE or DELETE with bound parameters only (SQLAlchemy ``text()``),
against the taskworks store or a database named in the ``databases`` setting. A dropped
connection or an unreachable server (OperationalError, InterfaceError) is retried with
backoff by the task's retry policy; anything else fails at once with a clear error.

    tw.submit("taskworks.db_operation", kwargs={
        "operation": "update", "database": "billing",
        "statement": "UPDATE invoices SET paid = :paid WHERE id = :id",
        "params": {"paid": True, "id": 42}})

Returns the rows as JSON-able dicts for a select, the affected row count otherwise.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from sqlalchemy import CursorResult, Engine, text
from sqlalchemy.exc import InterfaceError, OperationalError

from taskworks.declaring import TaskDecorator
from taskworks.errors import InvalidInput
from taskworks.runtime.retry import RetryPolicy
from taskworks.store.engine import Store

__all__ = ["NAME", "OPERATIONS", "POLICY", "Databases", "check_params", "check_statement",
           "jsonable", "register", "run_operation"]

NAME = "taskworks.db_operation"
OPERATIONS = ("select", "insert", "update", "delete")
#: transient failures: the server went away, the connection broke, a lock timed out
POLICY = RetryPolicy(max_retries=5, base_delay=0.5, backoff_factor=2.0, max_delay=30.0,
                     retry_on=(OperationalError, InterfaceError))
_LEADING_WORD = re.compile(r"^\s*([A-Za-z]+)\b")
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_statement(operation: object, statement: object) -> str:
    """The statement, validated: one statement whose leading keyword is the operation."""
    if not isinstance(operation, str) or operation.lower() not in OPERATIONS:
        raise InvalidInput("operation", operation, f"one of {', '.join(OPERATIONS)}")
    if not isinstance(statement, str) or not statement.strip():
        raise InvalidInput("statement", statement, "a non-empty SQL string")
    body = statement.strip()
    body = body.removesuffix(";").rstrip()
    if ";" in body:
        raise InvalidInput("statement", statement,
                           "a single statement (no ';' inside: pass values as parameters)")
    match = _LEADING_WORD.match(body)
    if match is None or match.group(1).lower() != operation.lower():
        raise InvalidInput("statement", statement,
                           f"a statement starting with {operation.upper()} "
                           f"(the operation given)")
    return body


def check_params(params: object) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, Mapping) or not all(
            isinstance(k, str) and _PARAM_NAME.match(k) for k in params):
        raise InvalidInput("params", params,
                           "a mapping of parameter names (identifiers) to values, bound "
                           "to :name placeholders")
    return dict(params)


def jsonable(value: Any) -> Any:
    """A column value as JSON: dates as ISO 8601, decimals as strings, bytes as base64."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def run_operation(engine: Engine, operation: str, statement: str,
                  params: Mapping[str, Any] | None = None) -> list[dict[str, Any]] | int:
    """Run one checked statement in its own transaction."""
    sql = check_statement(operation, statement)
    bound = check_params(params)
    with engine.begin() as conn:
        result: CursorResult[Any] = conn.execute(text(sql), bound)
        if operation.lower() == "select":
            return [{k: jsonable(v) for k, v in row._mapping.items()} for row in result]
        return int(result.rowcount)


class Databases:
    """Engines of the named databases, one per process (re-created after a fork)."""

    def __init__(self, store: Store, urls: Mapping[str, str]) -> None:
        """``store``: the default (taskworks' own); ``urls``: the ``databases`` setting."""
        self.store = store
        self.urls = urls
        self._stores: dict[str, Store] = {}
        self._lock = threading.Lock()

    def engine(self, name: str | None) -> Engine:
        if name is None:
            return self.store.engine
        urls = self.urls
        if name not in urls:
            known = ", ".join(sorted(urls)) or "none is configured"
            raise InvalidInput("database", name, f"a name from the databases setting ({known})")
        with self._lock:
            store = self._stores.setdefault(name, Store(urls[name]))
        return store.engine


def register(declare: TaskDecorator, store: Store, urls: Mapping[str, str]) -> None:
    """Declare ``taskworks.db_operation`` with ``declare`` (``tw.task``), on ``store`` and
    the named databases of ``urls``."""
    databases = Databases(store, urls)

    @declare(name=NAME, retry_policy=POLICY)
    def _db_operation(operation: str, statement: str, params: dict[str, Any] | None = None,
                      database: str | None = None) -> list[dict[str, Any]] | int:
        return run_operation(databases.engine(database), operation, statement, params)
