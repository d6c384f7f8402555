"""Error severity (the patterns guide's _classify_error) and error callbacks by exception type.

Rules map exception classes to a severity; for an error the most specific class in its
MRO that has a rule wins, whatever the order rules were added in (the patterns guide matched with
isinstance in dict order, so ``Exception`` could shadow ``ConnectionError``). A task
option ``severity=`` overrides the rules for that task.
"""

from __future__ import annotations

import gc
import sqlite3
import sys
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any

from billiard.exceptions import WorkerLostError
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from sqlalchemy.exc import SQLAlchemyError

from taskworks.errors import InvalidInput
from taskworks.logs import get_logger
from taskworks.runtime.middleware import Middleware, TaskContext
from taskworks.runtime.recycling import SoloRecycling
from taskworks.store.engine import Store

__all__ = ["DEFAULT_RULES", "ErrorCallback", "ErrorCallbacks", "Severity", "SeverityMiddleware",
           "SeverityRules", "default_callbacks", "parse_severity", "request_recycle"]

log = get_logger("taskworks.severity")


class Severity(StrEnum):
    """How bad a failure is, from least to most urgent (``notify.min_severity`` picks a
    threshold on this scale)."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


#: database errors of drivers imported only where used: no exception of one can exist
#: before its module is loaded, so the class joins the rules and callbacks then
#: (importing psycopg up front was an eighth of every taskworks process's start)
_LATE_DATABASE_ERRORS = (("psycopg", "Error"),)


def _loaded(late: tuple[tuple[str, str], ...]) -> list[type[BaseException]]:
    return [getattr(sys.modules[module], name) for module, name in late
            if module in sys.modules]


def _database_errors() -> tuple[type[BaseException], ...]:
    """The database errors a task of this process can raise now."""
    return (SQLAlchemyError, sqlite3.Error, *_loaded(_LATE_DATABASE_ERRORS))


class _LateClasses:
    """Classes of ``_LATE_DATABASE_ERRORS`` still waiting for their module. ``take()``
    returns those loaded since the last call (one dict lookup per waiting module)."""

    def __init__(self) -> None:
        self._waiting = list(_LATE_DATABASE_ERRORS)

    def take(self) -> list[type[BaseException]]:
        if not self._waiting or not any(m in sys.modules for m, _ in self._waiting):
            return []
        loaded = _loaded(tuple(self._waiting))
        self._waiting = [(m, n) for m, n in self._waiting if m not in sys.modules]
        return loaded


DEFAULT_RULES: dict[type[BaseException], Severity] = {
    ConnectionError: Severity.MEDIUM,
    TimeoutError: Severity.MEDIUM,
    MemoryError: Severity.CRITICAL,
    WorkerLostError: Severity.HIGH,
    SoftTimeLimitExceeded: Severity.HIGH,
    TimeLimitExceeded: Severity.HIGH,
    **dict.fromkeys(_database_errors(), Severity.HIGH),
}


def parse_severity(value: object, field: str = "severity") -> Severity:
    try:
        return Severity(str(value).lower())
    except ValueError:
        raise InvalidInput(field, value, f"one of {', '.join(s.value for s in Severity)}") from None


class SeverityRules:
    def __init__(self, rules: Mapping[type[BaseException], Severity] | None = None,
                 default: Severity = Severity.LOW) -> None:
        self._rules: dict[type[BaseException], Severity] = dict(
            DEFAULT_RULES if rules is None else rules)
        self.default = default
        self._late = _LateClasses() if rules is None else None

    def set(self, exc_type: type[BaseException], severity: Severity | str) -> None:
        if not (isinstance(exc_type, type) and issubclass(exc_type, BaseException)):
            raise InvalidInput("exc_type", exc_type, "an exception class")
        self._rules[exc_type] = parse_severity(severity)

    def classify(self, exc: BaseException) -> Severity:
        if self._late is not None:
            for klass in self._late.take():
                self._rules.setdefault(klass, Severity.HIGH)  # a rule set since wins
        for klass in type(exc).__mro__:
            if klass in self._rules:
                return self._rules[klass]
        return self.default


ErrorCallback = Callable[[BaseException, TaskContext], None]


class ErrorCallbacks:
    """Callbacks by exception type; those of the most specific registered class run."""

    def __init__(self) -> None:
        self._by_type: dict[type[BaseException], list[ErrorCallback]] = {}
        self._late: tuple[_LateClasses, ErrorCallback] | None = None

    def register(self, exc_type: type[BaseException], callback: ErrorCallback) -> None:
        self._by_type.setdefault(exc_type, []).append(callback)

    def register_database_errors(self, callback: ErrorCallback) -> None:
        """``callback`` for every database error, those of drivers loaded later too."""
        for db_error in _database_errors():
            self.register(db_error, callback)
        self._late = (_LateClasses(), callback)
        self._late[0].take()  # the loaded ones are registered above

    def matching(self, exc: BaseException) -> list[ErrorCallback]:
        if self._late is not None:
            late, callback = self._late
            for klass in late.take():
                self.register(klass, callback)
        for klass in type(exc).__mro__:
            if klass in self._by_type:
                return self._by_type[klass]
        return []

    def run(self, exc: BaseException, ctx: TaskContext) -> None:
        for callback in self.matching(exc):
            try:
                callback(exc, ctx)
            except Exception:
                # a broken callback must never hide the error it was called for
                log.exception("error callback failed", callback=getattr(callback, "__name__",
                              repr(callback)), task=ctx.name, original=type(exc).__name__)


class SeverityMiddleware(Middleware):
    options = frozenset({"severity"})

    def __init__(self, rules: SeverityRules, callbacks: ErrorCallbacks) -> None:
        self.rules = rules
        self.callbacks = callbacks

    def validate(self, task_name: str, options: Mapping[str, Any]) -> None:
        if options.get("severity") is not None:
            parse_severity(options["severity"])

    def after_failure(self, ctx: TaskContext) -> None:
        assert ctx.exc is not None
        override = ctx.options.get("severity")
        ctx.severity = (parse_severity(override) if override else self.rules.classify(ctx.exc))
        self.callbacks.run(ctx.exc, ctx)


def request_recycle(task: Any = None, solo: SoloRecycling | None = None) -> bool:
    """Have this process replaced once its current task is done: a prefork child by its
    pool, a solo worker by its supervisor through ``solo`` (runtime/recycling.py, made
    where ``solo_recycling`` is on).

    Billiard checks a child's memory after every task and retires the child (exit code
    EX_RECYCLE, the pool starts a fresh one) when it passes
    ``worker_max_memory_per_child``; making that check report "over the limit" in this
    child only is the one way to recycle it without killing the task or losing its
    result. Returns False where nothing replaces the process: a threads worker, a solo
    worker no supervisor restarts.
    """
    from billiard import pool
    from billiard.process import current_process

    if not current_process().name.startswith("ForkPoolWorker"):
        return task is not None and solo is not None and solo.request_after_task(task)
    pool.mem_rss = lambda: sys.maxsize
    return True


def default_callbacks(store: Store, solo: SoloRecycling | None = None) -> ErrorCallbacks:
    """The patterns guide's callbacks: a database error resets this process's pool; a MemoryError
    collects garbage and has the process recycled after the task (a solo worker through
    ``solo``)."""
    callbacks = ErrorCallbacks()

    def reset_database_pool(exc: BaseException, ctx: TaskContext) -> None:
        store.dispose()
        log.warning("database pool reset after error", task=ctx.name, error=type(exc).__name__)

    def collect_garbage(exc: BaseException, ctx: TaskContext) -> None:
        freed = gc.collect()
        recycled = request_recycle(ctx.task, solo)
        log.warning("garbage collected after MemoryError", task=ctx.name, objects=freed,
                    child_recycled_after_task=recycled)

    callbacks.register_database_errors(reset_database_pool)
    callbacks.register(MemoryError, collect_garbage)
    return callbacks
