"""The outcome journal: one record per attempt of every task, written in batches.

On the hot path a task only appends a dict to an in-memory buffer; a background thread
of each worker process writes the buffer with one multi-row INSERT when it reaches
``batch_size`` or every ``flush_interval`` seconds. The worker's shutdown signals flush
what is left, so a warm shutdown loses no record. Rows that fail to write are kept and
retried with the next batch (bounded, so a dead database cannot exhaust memory).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from taskworks.errors import InvalidInput
from taskworks.logs import get_logger
from taskworks.runtime.middleware import Middleware, TaskContext
from taskworks.runtime.redact import Redactor
from taskworks.settings import JournalSettings
from taskworks.store.engine import Store
from taskworks.store.tables import JournalEntry

log = get_logger("taskworks.journal")

#: "deferred": a middleware postponed the task (open breaker, rate limit) without
#: spending a retry; exc_type/exc_message say why
STATES = ("success", "failure", "retry", "revoked", "deferred")
#: rows kept for a retry when the database refuses a batch, before the oldest are dropped
MAX_PENDING = 100_000


class JournalWriter:
    def __init__(self, store: Store, batch_size: int = 500, flush_interval: float = 0.5) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._buffer: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        atexit.register(self.close)

    def add(self, row: dict[str, Any]) -> None:
        if self._pid != os.getpid():
            self._start()  # first record in this (possibly forked) process
        with self._lock:
            self._buffer.append(row)
            full = len(self._buffer) >= self.batch_size
        if full:
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._buffer = []  # a forked child must not write its parent's rows
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="taskworks-journal",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        with self._lock:
            rows, self._buffer = self._buffer, []
        if not rows:
            return 0
        try:
            with self.store.engine.begin() as conn:
                conn.execute(insert(JournalEntry), rows)
        except SQLAlchemyError as exc:
            log.error("journal write failed; will retry", rows=len(rows), error=str(exc)[:200])
            with self._lock:
                self._buffer = (rows + self._buffer)[-MAX_PENDING:]
            return 0
        return len(rows)

    def close(self) -> None:
        """Stop the thread and write everything buffered (worker shutdown, exit)."""
        if self._pid != os.getpid():
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)
        self.flush()


def _truncate(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit} more characters]"


def summarise(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return _truncate(text, limit)


class JournalMiddleware(Middleware):
    def __init__(self, writer: JournalWriter, settings: JournalSettings) -> None:
        self.writer = writer
        self.settings = settings
        self.redact = Redactor(settings.redact_keys)

    def record(self, ctx: TaskContext, state: str) -> None:
        exc = ctx.exc
        self.writer.add({
            "task_id": ctx.task_id, "name": ctx.name, "queue": ctx.queue, "state": state,
            "attempt": ctx.attempt, "args": self.redact(list(ctx.args)),
            "kwargs": self.redact(ctx.kwargs),
            "result": summarise(ctx.result, self.settings.result_max_chars)
            if state == "success" else None,
            "exc_type": type(exc).__name__ if exc is not None else None,
            "exc_message": _truncate(str(exc), 2000) if exc is not None else None,
            "traceback": _truncate(ctx.traceback, self.settings.traceback_max_chars),
            "severity": ctx.severity, "hostname": ctx.hostname, "pid": ctx.pid,
            "started_at": ctx.started_at, "finished_at": ctx.finished_at,
            "duration_ms": ctx.duration_ms,
        })

    def after_success(self, ctx: TaskContext) -> None:
        self.record(ctx, "success")

    def on_retry(self, ctx: TaskContext) -> None:
        self.record(ctx, "retry")

    def on_exhausted(self, ctx: TaskContext) -> None:
        self.record(ctx, "failure")

    def on_revoked(self, ctx: TaskContext) -> None:
        self.record(ctx, "revoked")

    def on_deferred(self, ctx: TaskContext) -> None:
        self.record(ctx, "deferred")

    def on_worker_shutdown(self) -> None:
        self.writer.close()


# -- reading ------------------------------------------------------------------------
_SINCE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str) -> datetime:
    """'90s', '15m', '1h', '7d', '2w' to the moment that long ago."""
    match = _SINCE.match(value.strip())
    if not match:
        raise InvalidInput("--since", value, "a number and a unit, like 30s, 15m, 1h, 7d, 2w")
    amount, unit = match.groups()
    return datetime.now(UTC) - timedelta(**{_UNITS[unit]: int(amount)})


@dataclass(frozen=True)
class JournalQuery:
    task: str | None = None
    state: str | None = None
    severity: str | None = None
    since: datetime | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in STATES:
            raise InvalidInput("state", self.state, f"one of {', '.join(STATES)}")
        if self.severity is not None and self.severity not in ("low", "medium", "high",
                                                               "critical"):
            raise InvalidInput("severity", self.severity, "low, medium, high or critical")
        if self.limit < 1:
            raise InvalidInput("limit", self.limit, "an integer >= 1")


def query(store: Store, q: JournalQuery) -> list[JournalEntry]:
    stmt = select(JournalEntry).order_by(JournalEntry.id.desc()).limit(q.limit)
    if q.task:
        stmt = stmt.where(JournalEntry.name == q.task)
    if q.state:
        stmt = stmt.where(JournalEntry.state == q.state)
    if q.severity:
        stmt = stmt.where(JournalEntry.severity == q.severity)
    if q.since:
        stmt = stmt.where(JournalEntry.finished_at >= q.since)
    with store.session() as session:
        return list(session.scalars(stmt))


def attempts(store: Store, task_id: str) -> list[JournalEntry]:
    """Every recorded attempt of one task, oldest first."""
    with store.session() as session:
        return list(session.scalars(
            select(JournalEntry).where(JournalEntry.task_id == task_id).order_by(JournalEntry.id)
        ))


def counts_by_state(store: Store, task: str | None = None) -> dict[str, int]:
    stmt = select(JournalEntry.state, func.count()).group_by(JournalEntry.state)
    if task:
        stmt = stmt.where(JournalEntry.name == task)
    with store.session() as session:
        return {state: int(n) for state, n in session.execute(stmt)}


def enforce_retention(store: Store, settings: JournalSettings,
                      now: datetime | None = None) -> dict[str, int]:
    """Delete entries older than retention_days, then the oldest beyond max_rows."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    with store.session() as session:
        by_age = session.execute(delete(JournalEntry).where(JournalEntry.finished_at < cutoff))
        keep_from = session.scalar(
            select(JournalEntry.id).order_by(JournalEntry.id.desc())
            .offset(settings.max_rows - 1).limit(1)
        )
        by_count = session.execute(delete(JournalEntry).where(JournalEntry.id < keep_from)) \
            if keep_from is not None else None
    return {"journal_by_age": getattr(by_age, "rowcount", 0) or 0,
            "journal_by_count": getattr(by_count, "rowcount", 0) or 0}
