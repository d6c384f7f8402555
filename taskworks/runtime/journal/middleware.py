"""The journal's middlewares: one row per attempt (``JournalMiddleware``), and with
``journal.durable`` the row in the store before the task returns (``JournalBarrier``).

The barrier makes an attempt's row land before Celery stores its result and acknowledges
its message: a SIGKILL after the ack would otherwise lose rows of tasks that never run
again. Tasks finishing together share one INSERT (a group commit). The worker's shutdown
signals flush what is left.
"""

from __future__ import annotations

import json
from typing import Any

from taskworks.broker import deferral
from taskworks.errors import OutcomeNotRecorded
from taskworks.logs import get_logger
from taskworks.redaction import Redactor, error_message, redact_text
from taskworks.runtime.journal.states import OUTSIDE, JournalState
from taskworks.runtime.journal.writer import JournalWriter
from taskworks.runtime.middleware import Middleware, TaskContext
from taskworks.settings import JournalSettings
from taskworks.store.tables import DeadLetter

__all__ = ["JournalBarrier", "JournalMiddleware", "summarise"]

log = get_logger("taskworks.journal")


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

    def record(self, ctx: TaskContext, state: JournalState) -> int:
        exc = ctx.exc
        number = self.writer.add({
            "task_id": ctx.task_id, "name": ctx.name, "queue": ctx.queue, "state": state,
            "attempt": ctx.attempt, "args": self.redact(list(ctx.args)),
            "kwargs": self.redact(ctx.kwargs),
            "result": summarise(ctx.result, self.settings.result_max_chars)
            if state in (JournalState.SUCCESS, JournalState.SCHEDULED) else None,
            "exc_type": type(exc).__name__ if exc is not None else None,
            # redacted before truncating: a cut must not leave half a parameter block
            "exc_message": _truncate(error_message(exc), 2000) if exc is not None else None,
            "traceback": _truncate(ctx.traceback and redact_text(ctx.traceback),
                                   self.settings.traceback_max_chars),
            "severity": ctx.severity, "hostname": ctx.hostname, "pid": ctx.pid,
            "started_at": ctx.started_at, "finished_at": ctx.finished_at,
            "duration_ms": ctx.duration_ms,
        })
        if state not in OUTSIDE:
            ctx.task.request.taskworks_journal_row = number  # for JournalBarrier
        return number

    def record_dead_letter(self, ctx: TaskContext, letter: DeadLetter) -> None:
        """The journal row of a dead letter whose own row died with its worker."""
        ctx.task.request.taskworks_journal_row = self.writer.add({
            "task_id": letter.task_id, "name": letter.name, "queue": letter.queue,
            "state": JournalState.FAILURE, "attempt": letter.attempts,
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
        self.record(ctx, JournalState.SUCCESS)

    def on_retry(self, ctx: TaskContext) -> None:
        self.record(ctx, JournalState.RETRY)

    def on_exhausted(self, ctx: TaskContext) -> None:
        if not ctx.ended_elsewhere:  # its failure row came with the other copy's letter
            self.record(ctx, JournalState.FAILURE)

    def on_revoked(self, ctx: TaskContext) -> None:
        if not ctx.expired:
            self.record(ctx, JournalState.REVOKED)
            return
        # Celery acknowledges an expired message before it signals; with this transport
        # the acknowledgement waits for the consumer's next take, which comes after this
        # handler: so the row is in the store before the message is gone
        if not self.writer.wait_written(self.record(ctx, JournalState.EXPIRED)):
            log.warning("expired task's journal row not written yet (store unavailable)",
                        task=ctx.name, task_id=ctx.task_id)

    def on_scheduled(self, ctx: TaskContext) -> None:
        self.record(ctx, JournalState.SCHEDULED)

    def on_deferred(self, ctx: TaskContext) -> None:
        self.record(ctx, JournalState.DEFERRED)

    def on_worker_shutdown(self) -> None:
        self.writer.close()


class JournalBarrier(Middleware):
    """Last in the chain (``journal.durable``): the attempt's row is in the store before
    Celery stores its result and acknowledges the message (a pool child killed after
    storing SUCCESS is acknowledged, not run again). After every other hook, so an
    idempotent result is stored before this write, not after.

    A success in a solo worker (``group_commit``) does not wait: its result write and
    its acknowledgement are parked until a group commit writes its row, within
    ``journal.group_commit_ms`` (broker/deferral.py). Elsewhere, and for the other
    outcomes, the task returns once its row is written."""

    records_outcome = True
    last = True

    def __init__(self, journal: JournalMiddleware, group_commit: bool = False) -> None:
        self.journal = journal
        self.group_commit = group_commit

    def after_success(self, ctx: TaskContext) -> None:
        if not self._deferred(ctx):
            self.journal.wait_written(ctx)

    def _deferred(self, ctx: TaskContext) -> bool:
        """Leave the row to a group commit, if what follows it can wait for it: the task's
        result goes through a backend that parks it (or there is none) and its message is
        acknowledged after it returns, within a delivery of this thread (a solo worker)."""
        task, writer = ctx.task, self.journal.writer
        number = getattr(task.request, "taskworks_journal_row", None)
        if number is None or not self.group_commit or ctx.acted or not task.acks_late \
                or not writer.can_defer():
            return False
        if not (task.ignore_result or getattr(task.backend, "waits_for_journal", False)):
            return False
        deferred = deferral.defer()
        if deferred is None:
            return False
        task.request.taskworks_journal_row = None
        writer.when_written(number, deferred.complete)
        return True

    def on_retry(self, ctx: TaskContext) -> None:
        self.journal.wait_written(ctx)

    def on_exhausted(self, ctx: TaskContext) -> None:
        self.journal.wait_written(ctx)

    def on_deferred(self, ctx: TaskContext) -> None:
        self.journal.wait_written(ctx)
