"""The journal's writer: rows buffered in memory, written in batches by a thread.

On the hot path a task appends a dict to an in-memory buffer; a background thread of
each worker process writes the buffer with one multi-row INSERT when it reaches
``batch_size`` or every ``flush_interval`` seconds. Rows are kept and retried with the
next batch while the database is unavailable (bounded, so a dead database cannot exhaust
memory); a batch refused for its values is written in parts, and a row refused on its
own is logged and dropped, so one bad row never holds back the others.

Whoever must not go on before a row is in the store either waits for it
(``wait_written``: a flush now) or leaves something to run once it is (``when_written``:
a solo worker's result and acknowledgement, broker/deferral.py); the thread then writes
within ``group_commit_delay``, so the rows of the tasks that ended meanwhile share one
commit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from bisect import bisect_right
from collections.abc import Callable
from time import monotonic
from typing import Any

from sqlalchemy import Connection, insert
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from taskworks.broker import deferral
from taskworks.logs import get_logger
from taskworks.runtime.journal.values import cause, strip_nul, values_refused
from taskworks.store.engine import Store
from taskworks.store.tables import JOURNAL_ONE_END, JournalEntry

__all__ = ["MAX_DEFERRED", "MAX_PENDING", "JournalWriter", "strip_nul", "values_refused"]

log = get_logger("taskworks.journal")
_lines = logging.getLogger("taskworks.journal")

#: rows kept for a retry while the database is unavailable, before the oldest are dropped
MAX_PENDING = 100_000
#: rows whose task's result and acknowledgement wait for them (a group commit) at most
MAX_DEFERRED = 1_000
#: what an INSERT raises: the database's errors, and a value the driver cannot encode
#: (psycopg serialises JSON itself: TypeError, or ValueError for a circular reference)
_WRITE_ERRORS = (SQLAlchemyError, TypeError, ValueError)

_Rows = list[tuple[int, dict[str, Any]]]
#: built once: SQLAlchemy memoises a statement's cache key on the object, so a new one per
#: flush cost about 80 us of CPU per task (measured on SQLite, one row per flush)
_INSERT = insert(JournalEntry)


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

    def __init__(self, store: Store, batch_size: int = 500, flush_interval: float = 0.5,
                 group_commit_delay: float = 0.0) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        #: the longest a row others wait for (``when_written``) stays unwritten
        self.group_commit_delay = group_commit_delay
        #: by row number: what runs once the row is written (deferral.Deferred.complete)
        self._then: dict[int, Callable[[], None]] = {}
        #: when the next flush is due for them (monotonic), None: no one waits
        self._due: float | None = None
        #: the last write failed for the database: rows are not deferred until one lands
        self.failing = False
        self._pending: dict[int, dict[str, Any]] = {}  # by number, oldest first
        self._dropped = _Numbers()
        self._added = 0
        self._lock = threading.Lock()
        self._flushing = threading.Lock()  # one write at a time
        #: the connection flushes write through, kept between them (under ``_flushing``)
        self._conn: Connection | None = None
        #: connections a forked child inherited: never used, closed or collected there
        #: (closing or finalising one would end or reset the parent's session)
        self._inherited: list[Connection] = []
        #: rows the database refused on their own: logged and dropped
        self.rejected_rows = 0
        #: ends of a task that another copy of it had recorded already (JOURNAL_ONE_END)
        self.second_ends = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        atexit.register(self.close)
        deferral.on_wait(self.flush_waited_for)  # an idle consumer: what waits, at once

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

    def can_defer(self) -> bool:
        """Whether a row may be waited for by ``when_written``: not while the database is
        failing (the task's message is requeued instead, as without the group commit)
        nor past MAX_DEFERRED rows waited for."""
        return not self.failing and len(self._then) < MAX_DEFERRED

    def when_written(self, number: int, then: Callable[[], None]) -> None:
        """Run ``then`` once row ``number`` is in the store (or refused for its values and
        dropped, as a task waiting for it would go on), at most ``group_commit_delay``
        from now while the database is available; at once if it is written already."""
        first = False
        with self._lock:
            waits = number in self._pending
            if waits:
                self._then[number] = then
                if self._due is None:
                    self._due = monotonic() + self.group_commit_delay
                    first = True
        if not waits:
            then()
        elif first:  # the thread sleeps until the due time now, not its usual interval
            self._wake.set()

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
            self._then, self._due, self.failing = {}, None, False
            self._flushing = threading.Lock()  # the parent's may have been held at fork
            if self._conn is not None:
                self._inherited.append(self._conn)
                self._conn = None
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="taskworks-journal",
                                            daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            due = self._due
            self._wake.wait(self.flush_interval if due is None else max(0.0, due - monotonic()))
            self._wake.clear()
            due = self._due
            if due is not None and monotonic() < due and len(self._pending) < self.batch_size \
                    and not self._stop.is_set():
                continue  # woken to sleep until a group commit is due, not to write yet
            try:
                self.flush()
            except Exception:  # the thread must outlive a bug: its rows stay pending
                log.exception("journal flush failed")

    def flush(self) -> int:
        """Write every pending row; returns how many were written. Then run what waited
        for them (``when_written``)."""
        written = self._write_pending()
        if self._then:
            self._run_waiting()
        return written

    def flush_waited_for(self) -> None:
        """Write now if results or acknowledgements wait for a row and the database is
        not failing (then the thread retries: an idle consumer must not block on it)."""
        if self._then and not self.failing:
            self.flush()

    def _write_pending(self) -> int:
        with self._flushing:
            with self._lock:
                batch = list(self._pending.items())
                self._due = None
            if not batch:
                return 0
            try:
                self._insert(batch)
            except _WRITE_ERRORS as exc:
                self._release()
                if not values_refused(exc):
                    self._keep(exc)
                    return 0
                return self._write_apart(batch)
            self._forget(batch)
            self.failing = False
            if _lines.isEnabledFor(logging.DEBUG):  # one cached check per flush when off
                log.debug("journal rows written", rows=len(batch))
            return len(batch)

    def _run_waiting(self) -> None:
        """Run, in row order, what waited for rows that are no longer pending."""
        with self._lock:
            done = [number for number in self._then if number not in self._pending]
            actions = [self._then.pop(number) for number in sorted(done)]
        with deferral.batched():  # the group's results in one round trip, then its acks
            for action in actions:
                action()

    def _insert(self, rows: _Rows) -> None:
        """One INSERT of ``rows`` in one transaction. A kept connection the database
        dropped since (a restart, an idle timeout) is replaced and the write made again
        once: the pool's pre-ping did that for a connection checked out per write."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                with conn.begin():
                    conn.execute(_INSERT, [row for _, row in rows])
                return
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
                self._release()

    def _connection(self) -> Connection:
        """The writer's own connection, opened once: a solo worker flushes once per task,
        and checking a connection out of the pool and resetting it on its return was a
        third of that flush's CPU. Under ``_flushing``."""
        engine = self.store.engine  # a new one after a fork or a dispose
        if self._conn is None or self._conn.engine is not engine:
            self._release()
            self._conn = engine.connect()
        return self._conn

    def _release(self) -> None:
        """Close the writer's connection (after a failed write, whatever its state now,
        and at close); the next flush opens a new one. Under ``_flushing``."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except SQLAlchemyError:  # already broken: its pool discards it
                log.debug("journal connection close failed", exc_info=True)

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
                            conn.execute(_INSERT, [row for _, row in part])
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
                  task=row.get("name"), state=row.get("state"), error=cause(exc))

    def _keep(self, exc: BaseException) -> None:
        """The database is unavailable: the pending rows wait for the next flush, the
        oldest beyond MAX_PENDING are dropped (what waited for one of them never runs: its
        message stays unacknowledged, and runs again once this process is gone)."""
        self.failing = True
        with self._lock:
            over = max(0, len(self._pending) - MAX_PENDING)
            for number in list(self._pending)[:over]:
                del self._pending[number]
                self._dropped.add(number)
                self._then.pop(number, None)
            pending = len(self._pending)
        log.error("journal write failed; rows kept for a retry", rows=pending,
                  error=cause(exc))
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
        with self._flushing:
            self._release()
