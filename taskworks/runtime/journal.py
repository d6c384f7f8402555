"""The outcome journal: one record per attempt of every task, written in batches.

On the hot path a task appends a dict to an in-memory buffer; a background thread of
each worker process writes the buffer with one multi-row INSERT when it reaches
``batch_size`` or every ``flush_interval`` seconds. With ``journal.durable`` (the
default) an attempt's row is also in the store before the task returns to Celery
(``JournalBarrier``, last in the chain), so before Celery stores its result and
acknowledges its message: a SIGKILL after the ack would otherwise lose rows of tasks
that never run again. Tasks finishing together share one INSERT (a group commit). The
worker's shutdown signals flush what is left. Rows that fail to write are kept and
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

from celery.exceptions import Ignore
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from taskworks.errors import InvalidInput
from taskworks.logs import get_logger
from taskworks.runtime.middleware import Middleware, TaskContext
from taskworks.runtime.redact import Redactor
from taskworks.settings import JournalSettings
from taskworks.store.engine import Store
from taskworks.store.tables import DeadLetter, JournalEntry

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
        self._flushing = threading.Lock()  # one INSERT at a time: "written" stays ordered
        self._added = 0  # rows added in this process; rows 1.._written are in the store
        self._written = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        atexit.register(self.close)

    def add(self, row: dict[str, Any]) -> int:
        """Buffer a row; returns its number, for ``wait_written``."""
        if self._pid != os.getpid():
            self._start()  # first record in this (possibly forked) process
        with self._lock:
            self._buffer.append(row)
            self._added += 1
            number = self._added
            full = len(self._buffer) >= self.batch_size
        if full:
            self._wake.set()
        return number

    def wait_written(self, number: int) -> bool:
        """Make sure row ``number`` is in the store: written already, or by a flush now
        (which takes every buffered row along). False if the database refused it."""
        if self._written >= number:
            return True
        self.flush()
        return self._written >= number

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._buffer = []  # a forked child must not write its parent's rows
            self._added = self._written = 0
            self._flushing = threading.Lock()  # the parent's may have been held at fork
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
        with self._flushing:
            with self._lock:
                rows, self._buffer = self._buffer, []
                upto = self._added
            if not rows:
                return 0
            try:
                with self.store.engine.begin() as conn:
                    conn.execute(insert(JournalEntry), rows)
            except SQLAlchemyError as exc:
                log.error("journal write failed; will retry", rows=len(rows),
                          error=str(exc)[:200])
                with self._lock:
                    self._buffer = (rows + self._buffer)[-MAX_PENDING:]
                return 0
            self._written = upto
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
        number = self.writer.add({
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
        if state != "revoked":  # revoked rows are written outside the task's execution
            ctx.task.request.taskworks_journal_row = number  # for JournalBarrier

    def record_dead_letter(self, ctx: TaskContext, letter: DeadLetter) -> None:
        """The journal row of a dead letter whose own row died with its worker."""
        ctx.task.request.taskworks_journal_row = self.writer.add({
            "task_id": letter.task_id, "name": letter.name, "queue": letter.queue,
            "state": "failure", "attempt": letter.attempts,
            "args": self.redact(list(letter.args or [])),
            "kwargs": self.redact(letter.kwargs or {}), "result": None,
            "exc_type": letter.exc_type, "exc_message": _truncate(letter.exc_message, 2000),
            "traceback": _truncate(letter.traceback, self.settings.traceback_max_chars),
            "severity": letter.severity, "hostname": None, "pid": None,
            "started_at": None, "finished_at": letter.failed_at, "duration_ms": None,
        })

    def wait_written(self, ctx: TaskContext) -> None:
        """The row this attempt recorded is in the store (or the database refused it)."""
        request = ctx.task.request
        number = getattr(request, "taskworks_journal_row", None)
        if number is None:
            return
        request.taskworks_journal_row = None
        if not self.writer.wait_written(number):
            log.warning("journal row not written before the task returned; kept for a retry",
                        task=ctx.name, task_id=ctx.task_id)

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


class JournalBarrier(Middleware):
    """Last in the chain (``journal.durable``): the attempt's row is in the store before
    the task returns, so before Celery stores its result and acknowledges the message
    (a pool child killed after storing SUCCESS is acknowledged, not run again). After
    every other hook, so an idempotent result is stored before this write, not after."""

    def __init__(self, journal: JournalMiddleware) -> None:
        self.journal = journal

    def after_success(self, ctx: TaskContext) -> None:
        self.journal.wait_written(ctx)

    def on_retry(self, ctx: TaskContext) -> None:
        self.journal.wait_written(ctx)

    def on_exhausted(self, ctx: TaskContext) -> None:
        self.journal.wait_written(ctx)

    def on_deferred(self, ctx: TaskContext) -> None:
        self.journal.wait_written(ctx)


class OutcomeGuard(Middleware):
    """Acknowledges, without running it, a message whose task already has an outcome (a
    success row, or a dead letter). Two ways a worker's death leaves such a message: it
    died after recording the outcome and before acknowledging (the message is
    redelivered), or after publishing a retry and before acknowledging the attempt that
    retried (two copies of the task then run, and the second must stop once the first
    has ended). First in the chain.

    Redeliveries and retries pay the lookup; so does every task of a worker whose
    reserved messages may outlive the visibility timeout (prefetched ones wait behind up
    to ``prefetch_multiplier`` tasks of ``time_limit`` each, then run): the broker then
    hands a copy to another worker while the original waits here, and the original,
    which is not marked redelivered, must not run again once the copy has ended.
    """

    def __init__(self, journal: JournalMiddleware) -> None:
        self.journal = journal
        self._every_task: bool | None = None

    @staticmethod
    def reserved_may_outlive_visibility(conf: Any) -> bool:
        visibility = (conf.broker_transport_options or {}).get("visibility_timeout")
        limit = conf.task_time_limit
        if not visibility or not limit:
            return False
        held = (int(conf.worker_prefetch_multiplier or 1) + 1) * float(limit)
        return float(visibility) < held

    def before_task(self, ctx: TaskContext) -> None:
        if self._every_task is None:
            self._every_task = self.reserved_may_outlive_visibility(ctx.task.app.conf)
        if not self._every_task and not ctx.redelivered and not ctx.task.request.retries:
            return
        try:
            with self.journal.writer.store.session() as session:
                states = set(session.scalars(select(JournalEntry.state).where(
                    JournalEntry.task_id == ctx.task_id,
                    JournalEntry.state.in_(("success", "failure")))))
                letter = None if "success" in states else session.scalars(select(
                    DeadLetter).where(DeadLetter.task_id == ctx.task_id).limit(1)).first()
        except SQLAlchemyError as exc:  # run it, as without the guard; never fail it here
            log.warning("outcome lookup failed; the task runs", task=ctx.name,
                        task_id=ctx.task_id, error=str(exc)[:200])
            return
        if "success" not in states and letter is None:
            return
        if letter is not None and "failure" not in states:
            # died between the dead letter and its journal row (written in that order)
            self.journal.record_dead_letter(ctx, letter)
            self.journal.wait_written(ctx)
        log.info("task already has an outcome: message acknowledged, not run again",
                 task=ctx.name, task_id=ctx.task_id,
                 outcome="success" if "success" in states else "dead letter")
        raise Ignore()


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
