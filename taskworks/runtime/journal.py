"""The outcome journal: one record per attempt of every task, written in batches.

On the hot path a task appends a dict to an in-memory buffer; a background thread of
each worker process writes the buffer with one multi-row INSERT when it reaches
``batch_size`` or every ``flush_interval`` seconds. With ``journal.durable`` (the
default) an attempt's row is also in the store before the task returns to Celery
(``JournalBarrier``, last in the chain), so before Celery stores its result and
acknowledges its message: a SIGKILL after the ack would otherwise lose rows of tasks
that never run again. Tasks finishing together share one INSERT (a group commit). The
worker's shutdown signals flush what is left. Rows are kept and retried with the next
batch while the database is unavailable (bounded, so a dead database cannot exhaust
memory); a batch refused for its values is written in parts, and a row refused on its
own is logged and dropped, so one bad row never holds back the others.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.exceptions import Ignore
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    ProgrammingError,
    SQLAlchemyError,
    StatementError,
)

from taskworks.errors import InvalidInput, OutcomeNotRecorded
from taskworks.logs import get_logger
from taskworks.redaction import Redactor, error_message, redact_text
from taskworks.runtime.middleware import Middleware, TaskContext
from taskworks.settings import JournalSettings
from taskworks.store.engine import Store
from taskworks.store.tables import JOURNAL_ONE_END, DeadLetter, JournalEntry

log = get_logger("taskworks.journal")

#: "deferred": a middleware postponed the task (open breaker, rate limit) without
#: spending a retry; exc_type/exc_message say why
STATES = ("success", "failure", "retry", "revoked", "deferred")
#: rows kept for a retry while the database is unavailable, before the oldest are dropped
MAX_PENDING = 100_000
#: PostgreSQL SQLSTATE classes of a statement refused for the values it carries: 22 data
#: exception (too long for its column, a malformed number or date), 23 integrity (NULL in
#: a NOT NULL column), 54 program limit (an index entry too large)
_REFUSED_CLASSES = frozenset({"22", "23", "54"})
#: and the class-42 states about a value's type; the rest of class 42 (a missing table or
#: column, a permission) is the schema's fault, which a migration fixes: the rows wait
_REFUSED_STATES = frozenset({"42804", "42846", "42P18"})
#: what an INSERT raises: the database's errors, and a value the driver cannot encode
#: (psycopg serialises JSON itself: TypeError, or ValueError for a circular reference)
_WRITE_ERRORS = (SQLAlchemyError, TypeError, ValueError)

_Rows = list[tuple[int, dict[str, Any]]]


def strip_nul(value: Any) -> Any:
    """``value`` without NUL characters in its strings, nested ones included: PostgreSQL's
    text columns refuse them (jsonb refuses ``\\u0000`` too), and one exception message
    holding one failed its whole batch. Removed rather than replaced, so that a value
    never grows past its column's length."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {strip_nul(k): strip_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strip_nul(v) for v in value]
    return value


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


def _cause(exc: BaseException) -> str:
    """The first line of the driver's message: the next ones (PostgreSQL's DETAIL and
    CONTEXT, SQLAlchemy's [parameters: ...]) can hold the row's values, arguments too."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


class _Numbers:
    """A set of row numbers kept as sorted, disjoint, half-open ranges: the rows an outage
    drops are consecutive, so a long one costs a few entries, not one per row."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._stops: list[int] = []

    def __contains__(self, number: int) -> bool:
        i = bisect_right(self._starts, number)
        return i > 0 and number < self._stops[i - 1]

    def add(self, number: int) -> None:
        i = bisect_right(self._starts, number)  # the range before it is at i - 1
        if i > 0 and number < self._stops[i - 1]:
            return
        joins_left = i > 0 and self._stops[i - 1] == number
        joins_right = i < len(self._starts) and self._starts[i] == number + 1
        if joins_left and joins_right:
            self._stops[i - 1] = self._stops.pop(i)
            del self._starts[i]
        elif joins_left:
            self._stops[i - 1] = number + 1
        elif joins_right:
            self._starts[i] = number
        else:
            self._starts.insert(i, number)
            self._stops.insert(i, number + 1)


class JournalWriter:
    """Rows are numbered 1, 2, ... in each process. A row is pending until it is written,
    or dropped: refused by the database on its own, taken back by ``discard``, or the
    oldest beyond MAX_PENDING. Every other number up to the last added is in the store,
    which is how ``wait_written`` answers exactly."""

    def __init__(self, store: Store, batch_size: int = 500, flush_interval: float = 0.5) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._pending: dict[int, dict[str, Any]] = {}  # by number, oldest first
        self._dropped = _Numbers()
        self._added = 0
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one write at a time
        #: rows the database refused on their own: logged and dropped
        self.rejected_rows = 0
        #: ends of a task that another copy of it had recorded already (JOURNAL_ONE_END)
        self.second_ends = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        atexit.register(self.close)

    def add(self, row: dict[str, Any]) -> int:
        """Buffer a row; returns its number, for ``wait_written`` and ``discard``."""
        if self._pid != os.getpid():
            self._start()  # first record in this (possibly forked) process
        row = strip_nul(row)
        with self._lock:
            self._added += 1
            number = self._added
            self._pending[number] = row
            full = len(self._pending) >= self.batch_size
        if full:
            self._wake.set()
        return number

    def _state(self, number: int) -> bool | None:
        """True: row ``number`` is in the store; False: it never will be; None: pending.
        Under ``_lock``."""
        if number in self._pending:
            return None
        return 0 < number <= self._added and number not in self._dropped

    def wait_written(self, number: int) -> bool:
        """Make sure row ``number`` is in the store: written already, or by a flush now
        (which takes every pending row along). False if it is not: the database is
        unavailable (the row stays pending) or refused it (the row was dropped)."""
        with self._lock:
            state = self._state(number)
        if state is None:
            self.flush()
            with self._lock:
                state = self._state(number)
        return state is True

    def discard(self, number: int) -> bool:
        """Take row ``number`` back if it is still pending: True then, and it will never
        be written. False if it is not pending: written already (or dropped). Waits for a
        write in progress, which may hold the row."""
        with self._flushing, self._lock:
            if self._pending.pop(number, None) is None:
                return False
            self._dropped.add(number)
            return True

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._pending = {}  # a forked child must not write its parent's rows
            self._dropped = _Numbers()
            self._added = self.rejected_rows = self.second_ends = 0
            self._flushing = threading.Lock()  # the parent's may have been held at fork
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="taskworks-journal",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the thread must outlive a bug: its rows stay pending
                log.exception("journal flush failed")

    def flush(self) -> int:
        """Write every pending row; returns how many were written."""
        with self._flushing:
            with self._lock:
                batch = list(self._pending.items())
            if not batch:
                return 0
            try:
                with self.store.engine.begin() as conn:
                    conn.execute(insert(JournalEntry), [row for _, row in batch])
            except _WRITE_ERRORS as exc:
                if not values_refused(exc):
                    self._keep(exc)
                    return 0
                return self._write_apart(batch)
            self._forget(batch)
            return len(batch)

    def _write_apart(self, batch: _Rows) -> int:
        """After the database refused ``batch`` for its values: write it in halves, down
        to single rows, so that the good rows land in a few statements and each row refused
        on its own is dropped. If the database becomes unavailable meanwhile, what is left
        stays pending."""
        written = 0
        mid = len(batch) // 2
        parts = [batch[mid:], batch[:mid]] if mid else [batch]  # a stack: oldest first
        try:
            with self.store.engine.connect() as conn:
                while parts:
                    part = parts.pop()
                    try:
                        with conn.begin():
                            conn.execute(insert(JournalEntry), [row for _, row in part])
                    except _WRITE_ERRORS as exc:
                        if not values_refused(exc):
                            raise
                        if len(part) == 1:
                            self._reject(*part[0], exc)
                        else:
                            mid = len(part) // 2
                            parts += [part[mid:], part[:mid]]
                        continue
                    self._forget(part)
                    written += len(part)
        except SQLAlchemyError as exc:
            self._keep(exc)
        return written

    def _forget(self, written: _Rows) -> None:
        with self._lock:
            for number, _ in written:
                del self._pending[number]

    def _reject(self, number: int, row: dict[str, Any], exc: BaseException) -> None:
        second_end = JOURNAL_ONE_END in str(getattr(exc, "orig", exc)) or (
            "UNIQUE constraint failed: journal.task_id" in str(exc))
        with self._lock:
            del self._pending[number]
            self._dropped.add(number)
            if second_end:
                self.second_ends += 1
            else:
                self.rejected_rows += 1
        if second_end:  # another copy of the task ended it first: one end per task
            log.info("a second end of the task not recorded (another copy ended it)",
                     task_id=row.get("task_id"), task=row.get("name"), state=row.get("state"))
            return
        # never the arguments: they may hold what redaction missed
        log.error("journal row refused by the database; dropped", task_id=row.get("task_id"),
                  task=row.get("name"), state=row.get("state"), error=_cause(exc))

    def _keep(self, exc: BaseException) -> None:
        """The database is unavailable: the pending rows wait for the next flush, the
        oldest beyond MAX_PENDING are dropped."""
        with self._lock:
            over = max(0, len(self._pending) - MAX_PENDING)
            for number in list(self._pending)[:over]:
                del self._pending[number]
                self._dropped.add(number)
            pending = len(self._pending)
        log.error("journal write failed; rows kept for a retry", rows=pending,
                  error=_cause(exc))
        if over:
            log.error("journal rows dropped: too many waiting for the database", rows=over)

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
            # redacted before truncating: a cut must not leave half a parameter block
            "exc_message": _truncate(error_message(exc), 2000) if exc is not None else None,
            "traceback": _truncate(ctx.traceback and redact_text(ctx.traceback),
                                   self.settings.traceback_max_chars),
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
        """The row this attempt recorded is in the store. When the store is unavailable,
        the row is taken back and OutcomeNotRecorded raised: the message is requeued and
        its redelivery records the row once (a row kept for later would be written twice,
        or lost with this process)."""
        request = ctx.task.request
        number = getattr(request, "taskworks_journal_row", None)
        if number is None:
            return
        request.taskworks_journal_row = None
        if self.writer.wait_written(number):
            return
        if ctx.acted:  # a retry or deferral already sent: the row must still land later
            log.warning("journal row not written before the task returned (pending, or "
                        "refused for its values)", task=ctx.name, task_id=ctx.task_id)
            return
        if self.writer.discard(number):
            raise OutcomeNotRecorded(f"journal row of {ctx.name}[{ctx.task_id}] not written: "
                                     "the store is unavailable")
        # not pending any more: written meanwhile, or dropped as unwritable (logged there)

    def after_success(self, ctx: TaskContext) -> None:
        self.record(ctx, "success")

    def on_retry(self, ctx: TaskContext) -> None:
        self.record(ctx, "retry")

    def on_exhausted(self, ctx: TaskContext) -> None:
        if not ctx.ended_elsewhere:  # its failure row came with the other copy's letter
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

    records_outcome = True
    last = True

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
        if getattr(ctx.task, "is_workflow_step", False):
            return  # a step's state in its run says whether it ended (workflows/engine.py)
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
