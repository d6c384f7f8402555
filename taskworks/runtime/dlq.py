"""The dead-letter store: tasks that failed for good, kept with everything needed to replay.

A task lands here when it exhausts its retries, fails with an error its policy never
retries, exceeds its redelivery limit or its retry budget. The row is written before the
message is acknowledged, so nothing is lost between the two. A replay submits the task
again (same name, arguments and queue) under a new id and records that id on the row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from celery.result import AsyncResult
from sqlalchemy import CursorResult, Select, delete, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from taskworks.errors import InvalidInput
from taskworks.logs import get_logger
from taskworks.redaction import Redactor, error_message, redact_text
from taskworks.runtime.journal.periods import parse_since
from taskworks.runtime.journal.values import strip_nul
from taskworks.runtime.middleware import Middleware, TaskContext
from taskworks.store.engine import Store
from taskworks.store.tables import DeadLetter

__all__ = ["REPLAY_HEADER", "DeadLetterFilter", "DeadLetterMiddleware", "DeadLetterStore",
           "Resend", "SubmitTask", "shown"]

log = get_logger("taskworks.dlq")

#: header on a replayed message naming the task id it replays
REPLAY_HEADER = "taskworks_replay_of"


@dataclass(frozen=True)
class DeadLetterFilter:
    task: str | None = None
    exc_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: None: both; False: only never replayed; True: only replayed
    replayed: bool | None = None

    @classmethod
    def parse(cls, task: str | None = None, exc_type: str | None = None,
              since: str | datetime | None = None, until: str | datetime | None = None,
              replayed: bool | None = None) -> DeadLetterFilter:
        """A filter from values as people type them: ``since`` a period ("1h", "7d"),
        ``until`` an ISO 8601 time; an empty text filters nothing."""
        if isinstance(since, str):
            since = parse_since(since) if since else None
        if isinstance(until, str) and until:
            try:
                until = datetime.fromisoformat(until)
            except ValueError:
                raise InvalidInput("until", until,
                                   "an ISO 8601 time like 2026-11-23T12:00") from None
        return cls(task=task or None, exc_type=exc_type or None, since=since,
                   until=until or None, replayed=replayed)

    @property
    def is_empty(self) -> bool:
        """Matches every letter."""
        return self == DeadLetterFilter()

    def apply(self, stmt: Select[Any]) -> Select[Any]:
        if self.task:
            stmt = stmt.where(DeadLetter.name == self.task)
        if self.exc_type:
            stmt = stmt.where(DeadLetter.exc_type == self.exc_type)
        if self.since:
            stmt = stmt.where(DeadLetter.failed_at >= self.since)
        if self.until:
            stmt = stmt.where(DeadLetter.failed_at < self.until)
        if self.replayed is True:
            stmt = stmt.where(DeadLetter.replay_count > 0)
        elif self.replayed is False:
            stmt = stmt.where(DeadLetter.replay_count == 0)
        return stmt


def shown(letter: DeadLetter, redact: Redactor) -> dict[str, Any]:
    """A letter as people see it (``/api/dlq``, ``taskworks dlq show``): arguments through
    ``redact`` (``journal.redact_keys``), error texts through ``redact_text`` again (a
    letter written before they were redacted on the way in). The row keeps the raw
    arguments: a replay needs them."""
    row = {column.key: getattr(letter, column.key) for column in DeadLetter.__table__.columns}
    row["args"] = redact(row["args"])
    row["kwargs"] = redact(row["kwargs"])
    for key in ("exc_message", "traceback"):
        row[key] = row[key] and redact_text(row[key])
    return row


class SubmitTask(Protocol):
    """Sends a registered task by name (``Taskworks.submit``)."""

    def __call__(self, name: str, args: Iterable[Any] = (),
                 kwargs: dict[str, Any] | None = None, *, queue: str | None = None,
                 headers: dict[str, Any] | None = None) -> AsyncResult: ...


@dataclass(frozen=True)
class Resend:
    """What a replay needs from the app; the composition root gives it."""

    submit: SubmitTask
    #: the queues that exist now: a letter's queue may have gone since
    queue_names: Callable[[], list[str]]
    #: resumes the workflow run whose step ran as this task id: the run's id, or None
    resume_run: Callable[[str], str | None]


class DeadLetterStore:
    """The letters in ``store``; ``resend`` (given by ``Taskworks``) is what replays use."""

    def __init__(self, store: Store, resend: Resend | None = None) -> None:
        self.store = store
        self.resend = resend

    def add(self, ctx: TaskContext) -> int | None:
        """Write the letter of a task that failed for good; its id, or None when the task
        already has one (another copy of it ended first: a task ends once)."""
        exc = ctx.exc
        # arguments are stored as given: a replay needs them (the journal and shown()
        # redact them); the error texts lose the values they quote (redaction.py),
        # and the json columns keep a NUL as \u0000. The text columns refuse NUL bytes
        # (PostgreSQL), so the other fields lose theirs.
        values = dict(
            task_id=strip_nul(ctx.task_id), name=strip_nul(ctx.name),
            queue=strip_nul(ctx.queue), args=list(ctx.args), kwargs=ctx.kwargs,
            exc_type=strip_nul(type(exc).__name__) if exc else None,
            exc_message=strip_nul(error_message(exc)) if exc else None,
            traceback=strip_nul(ctx.traceback and redact_text(ctx.traceback)),
            severity=strip_nul(ctx.severity),
            attempts=ctx.attempt, reason=strip_nul(ctx.exhausted_reason or "failed"),
            failed_at=datetime.now(UTC), replay_count=0,
        )
        insert = postgresql_insert if self.store.engine.dialect.name == "postgresql" \
            else sqlite_insert
        with self.store.session() as session:
            stmt = insert(DeadLetter).values(**values).on_conflict_do_nothing(
                index_elements=[DeadLetter.task_id]).returning(DeadLetter.id)
            letter_id = session.scalar(stmt)
        return None if letter_id is None else int(letter_id)

    def find(self, flt: DeadLetterFilter = DeadLetterFilter(), limit: int = 100
             ) -> list[DeadLetter]:
        stmt = flt.apply(select(DeadLetter)).order_by(DeadLetter.id.desc()).limit(limit)
        with self.store.session() as session:
            return list(session.scalars(stmt))

    def count(self, flt: DeadLetterFilter = DeadLetterFilter()) -> int:
        with self.store.session() as session:
            return int(session.scalar(flt.apply(select(func.count(DeadLetter.id)))) or 0)

    def get(self, letter_id: int) -> DeadLetter:
        with self.store.session() as session:
            row = session.get(DeadLetter, letter_id)
        if row is None:
            raise InvalidInput("id", letter_id, "the id of a dead letter ('taskworks dlq list')")
        return row

    def replay(self, letter_ids: list[int]) -> dict[int, str]:
        """Submit each letter again; returns {letter id: new task id}. All ids must exist.

        The letter of a workflow step (or map-reduce partition) resumes its run instead:
        the failed steps run again, with their inputs from the run (the id returned is
        the run's)."""
        if self.resend is None:
            raise RuntimeError("this DeadLetterStore was built without a Resend: only the "
                               "one of a Taskworks (tw.dead_letters) replays")
        resend = self.resend
        letters = [self.get(i) for i in letter_ids]  # refuse before sending anything
        replayed: dict[int, str] = {}
        for letter in letters:
            run_id = resend.resume_run(letter.task_id)
            if run_id is not None:
                again = run_id
            else:
                queue = letter.queue if letter.queue in resend.queue_names() else None
                again = resend.submit(letter.name, letter.args or [], letter.kwargs or {},
                                      queue=queue, headers={REPLAY_HEADER: letter.task_id}).id
            with self.store.session() as session:
                row = session.get(DeadLetter, letter.id)
                assert row is not None
                row.replay_count += 1
                row.replayed_at = datetime.now(UTC)
                row.replay_task_id = again
            replayed[letter.id] = again
            log.info("dead letter replayed", letter=letter.id, task=letter.name,
                     original=letter.task_id, replay=again,
                     resumed_run=run_id is not None)
        return replayed

    def replay_matching(self, flt: DeadLetterFilter, limit: int = 1000) -> dict[int, str]:
        return self.replay([row.id for row in self.find(flt, limit)])

    def replay_selection(self, ids: list[int] | None = None, *, all: bool = False,
                         matching: DeadLetterFilter = DeadLetterFilter()) -> dict[int, str]:
        """Replay the letters ``ids``, or ``all`` those ``matching`` (one or the other)."""
        if ids and all:
            raise InvalidInput("all", all, "either ids or all, not both")
        if ids:
            return self.replay(ids)
        if all:
            return self.replay_matching(matching)
        raise InvalidInput("ids", ids or [], "one or more dead letter ids, or all")

    def purge(self, flt: DeadLetterFilter = DeadLetterFilter(), *, all: bool = False) -> int:
        """Delete the letters matching ``flt``; deleting every one takes ``all``."""
        if flt.is_empty and not all:
            raise InvalidInput("all", all, "true to delete every dead letter, or a filter")
        with self.store.session() as session:
            stmt = flt.apply(select(DeadLetter.id))
            result = session.execute(delete(DeadLetter).where(DeadLetter.id.in_(stmt)))
        return int(cast(CursorResult[Any], result).rowcount)

    def delete(self, letter_id: int) -> None:
        """Delete one letter; InvalidInput when there is none of that id."""
        with self.store.session() as session:
            result = session.execute(delete(DeadLetter).where(DeadLetter.id == letter_id))
        if not cast(CursorResult[Any], result).rowcount:
            raise InvalidInput("id", letter_id, "the id of a dead letter")


class DeadLetterMiddleware(Middleware):
    #: a letter that cannot be written leaves its message unacknowledged (runtime)
    records_outcome = True

    def __init__(self, letters: DeadLetterStore) -> None:
        self.letters = letters

    def on_exhausted(self, ctx: TaskContext) -> None:
        letter = self.letters.add(ctx)
        if letter is None:
            # another copy of this task was dead-lettered first: this one ends silently
            ctx.ended_elsewhere = True
            log.warning("task already dead-lettered by another copy: nothing recorded",
                        task=ctx.name, task_id=ctx.task_id)
            return
        log.warning("task dead-lettered", task=ctx.name, task_id=ctx.task_id,
                    reason=ctx.exhausted_reason, letter=letter)
