"""Scheduled tasks: the delayed messages the durable schedule keeps until they are due
(``countdown``, ``eta``, retry backoff; broker/schedule.py), as operators see them.

``tw.scheduled`` lists them in due order, shows one with its arguments (secret-looking
values hidden), cancels one before it is due, and counts them (``summary``: by queue, by
how soon they are due, and how late the mover is). Everything is read from the schedule's
keys (keys.py) and written only through its scripts: a task is cancelled whole (taken
out of all four keys at once) or not at all, and never after the mover published it.

The schedule holds messages only where the app uses taskworks' transport (every app
``Taskworks()`` builds; opt-in for an adopted Celery app): elsewhere the lists are empty.
"""

from __future__ import annotations

import base64
import builtins
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from time import time
from typing import Any, Protocol

import redis
from pydantic import BaseModel, ConfigDict, Field

from taskworks import keys, topology
from taskworks.broker import schedule
from taskworks.errors import InvalidInput
from taskworks.logs import get_logger
from taskworks.redaction import Redactor
from taskworks.runtime.journal.states import JournalState

__all__ = ["CANCEL_MESSAGE", "MAX_LIMIT", "SCAN_LIMIT", "WINDOWS", "JournalRows", "MarkRevoked",
           "ScheduleSummary", "ScheduledTask", "ScheduledTaskDetail", "ScheduledTasks",
           "summary_of"]

log = get_logger("taskworks.scheduled")

#: the most tasks one ``list`` returns
MAX_LIMIT = 1000
#: the most schedule entries a ``list`` filtered by queue reads (in due order), so that
#: its cost stays bounded however many tasks other queues hold
SCAN_LIMIT = 5000
_SCAN_BATCH = 500
#: the horizons ``summary`` counts tasks due within, in seconds
WINDOWS = {"1m": 60, "1h": 3600, "1d": 86_400}
#: the reason in the result backend (TaskRevokedError) and the journal row
CANCEL_MESSAGE = "cancelled before it was due"
_ID_MAX = 255  # the journal's task id column (store/tables.py TASK_ID_LENGTH)


class MarkRevoked(Protocol):
    """Records ``task_id`` as REVOKED with ``reason`` in the result backend (Celery's
    ``backend.mark_as_revoked``): a client waiting for its result gets TaskRevokedError."""

    def __call__(self, task_id: str, reason: str) -> object: ...


class JournalRows(Protocol):
    """Where a journal row goes (runtime/journal/writer.py ``JournalWriter``)."""

    def add(self, row: dict[str, Any]) -> int: ...
    def wait_written(self, number: int) -> bool: ...


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class ScheduledTask(_Frozen):
    id: str
    name: str
    queue: str
    priority: int = Field(ge=0, le=9, description="0-9, 9 the most urgent")
    due: datetime = Field(description="when it is published to its queue (UTC)")
    retries: int = Field(description="retries before this attempt (a retry's backoff)")
    expires: datetime | None = Field(default=None, description="its deadline to start")


class ScheduledTaskDetail(ScheduledTask):
    #: the call's arguments, secret-looking values hidden (None: not a JSON message,
    #: which is never decoded here)
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None


class ScheduleSummary(_Frozen):
    total: int
    by_queue: dict[str, int]
    #: tasks due within each horizon of WINDOWS ("1m", "1h", "1d"), overdue ones included
    due_within: dict[str, int]
    next_due: datetime | None
    #: how late the most overdue task is (the mover is that far behind); 0 when none is
    mover_lag: float


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _moment(value: Any) -> datetime | None:
    """An epoch second or an ISO 8601 text (Celery's ``expires`` header) as aware UTC."""
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str) and value:
            moment = datetime.fromisoformat(value)
            return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        pass
    return None


def _call(message: dict[str, Any]) -> tuple[list[Any], dict[str, Any]] | None:
    """The (args, kwargs) of a JSON message of Celery's protocol 2 (or 1); None for any
    other content type: a pickle is never decoded here, whoever wrote it."""
    if message.get("content-type") != "application/json":
        return None
    body = message.get("body")
    properties = message.get("properties") or {}
    if not isinstance(body, str):
        return None
    try:
        raw = base64.b64decode(body) if properties.get("body_encoding") == "base64" else body
        payload = json.loads(raw)
    except ValueError:  # binascii.Error and JSONDecodeError are ValueErrors
        return None
    if isinstance(payload, list) and len(payload) >= 2:
        args, kwargs = payload[0], payload[1]
    elif isinstance(payload, dict):
        args, kwargs = payload.get("args"), payload.get("kwargs")
    else:
        return None
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return None
    return args, kwargs


def _opened(envelope: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """An envelope and its kombu message, or None when it is not one of ours."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("message"), str):
        return None
    try:
        message = json.loads(envelope["message"])
    except ValueError:
        return None
    return (envelope, message) if isinstance(message, dict) else None


def _parse(raw: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    try:
        return _opened(json.loads(_text(raw)))
    except ValueError:
        return None


def _task(envelope: dict[str, Any], message: dict[str, Any]) -> ScheduledTask:
    headers = message.get("headers") or {}
    properties = message.get("properties") or {}
    raw_priority = properties.get("priority")
    if isinstance(raw_priority, bool) or not isinstance(raw_priority, int):
        raw_priority = 0  # as kombu's Redis transport reads it: served first
    raw_priority = min(max(raw_priority, 0), topology.MAX_PRIORITY)
    retries = headers.get("retries")
    return ScheduledTask(
        id=str(envelope.get("id") or headers.get("id") or ""),
        name=str(envelope.get("name") or headers.get("task") or ""),
        queue=str(envelope.get("queue") or ""),
        priority=topology.user_priority(raw_priority),
        due=_moment(envelope.get("due")) or datetime.fromtimestamp(0, UTC),
        retries=retries if isinstance(retries, int) and not isinstance(retries, bool) else 0,
        expires=_moment(headers.get("expires")))


def summary_of(client: redis.Redis, now: float | None = None) -> ScheduleSummary:
    """The schedule's counts in one round trip (also what /metrics exposes)."""
    now = time() if now is None else now
    pipe = client.pipeline(transaction=False)
    pipe.zcard(keys.SCHEDULE)
    pipe.hgetall(keys.SCHEDULE_COUNTS)
    for seconds in WINDOWS.values():
        pipe.zcount(keys.SCHEDULE, "-inf", repr(now + seconds))
    pipe.zrange(keys.SCHEDULE, 0, 0, withscores=True)
    total, counts, *found = pipe.execute()
    first = found.pop()
    by_queue = {_text(q): int(n) for q, n in counts.items() if int(n) > 0}
    next_due = float(first[0][1]) if first else None
    return ScheduleSummary(
        total=int(total), by_queue=dict(sorted(by_queue.items())),
        due_within={label: int(n) for label, n in zip(WINDOWS, found, strict=True)},
        next_due=None if next_due is None else _moment(next_due),
        mover_lag=0.0 if next_due is None else round(max(0.0, now - next_due), 3))


def _check_id(task_id: Any) -> str:
    if not isinstance(task_id, str) or not task_id or len(task_id) > _ID_MAX:
        raise InvalidInput("task_id", task_id, f"a task id (1 to {_ID_MAX} characters)")
    return task_id


def _not_scheduled(task_id: str) -> InvalidInput:
    return InvalidInput("task_id", task_id, "the id of a scheduled task (one that is due "
                        "was published to its queue already: revoke it instead)")


class ScheduledTasks:
    """The tasks in the durable schedule of the broker ``client`` talks to.

    ``mark_revoked`` records a cancelled task's result (so whoever waits on it learns it
    will not run), ``journal`` takes its ``revoked`` row (None: no journal), ``redact``
    hides secret-looking arguments (``journal.redact_keys``)."""

    def __init__(self, client: redis.Redis, mark_revoked: MarkRevoked,
                 journal: JournalRows | None = None, redact: Redactor | None = None) -> None:
        self.client = client
        self.mark_revoked = mark_revoked
        self.journal = journal
        self.redact = redact or Redactor()

    def _envelopes(self, tags: Sequence[Any]) -> builtins.list[tuple[dict[str, Any],
                                                                     dict[str, Any]]]:
        if not tags:
            return []
        found = self.client.hmget(keys.SCHEDULE_ENVELOPES, list(tags))
        # an entry published or cancelled between the two reads has no envelope: gone
        return [parsed for raw in found if raw is not None
                and (parsed := _parse(raw)) is not None]

    def list(self, queue: str | None = None, limit: int = 100,
             offset: int = 0) -> builtins.list[ScheduledTask]:
        """Up to ``limit`` (1 to MAX_LIMIT) tasks in due order, the earliest first,
        skipping the first ``offset``; only those bound for ``queue`` when given.

        Cost: without ``queue``, the entries asked for. With ``queue``, at most
        SCAN_LIMIT entries are read, from the earliest: tasks of that queue due after
        the first SCAN_LIMIT of all queues are not listed (``summary`` counts every one).
        """
        if isinstance(limit, bool) or not isinstance(limit, int) \
                or not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput("limit", limit, f"an integer from 1 to {MAX_LIMIT}")
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInput("offset", offset, "an integer >= 0")
        if queue is not None and (not isinstance(queue, str) or not 0 < len(queue) <= 128):
            raise InvalidInput("queue", queue, "a queue name (1 to 128 characters)")
        if queue is None:
            tags = self.client.zrange(keys.SCHEDULE, offset, offset + limit - 1)
            return [_task(*parsed) for parsed in self._envelopes(tags)]
        tasks: builtins.list[ScheduledTask] = []
        skip = offset
        for start in range(0, SCAN_LIMIT, _SCAN_BATCH):
            tags = self.client.zrange(keys.SCHEDULE, start, start + _SCAN_BATCH - 1)
            for envelope, message in self._envelopes(tags):
                if envelope.get("queue") != queue:
                    continue
                if skip:
                    skip -= 1
                    continue
                tasks.append(_task(envelope, message))
                if len(tasks) == limit:
                    return tasks
            if len(tags) < _SCAN_BATCH:
                break
        return tasks

    def _detail(self, envelope: dict[str, Any], message: dict[str, Any]) -> ScheduledTaskDetail:
        call = _call(message)
        args, kwargs = (None, None) if call is None else call
        return ScheduledTaskDetail(**_task(envelope, message).model_dump(),
                                   args=self.redact(args), kwargs=self.redact(kwargs))

    def show(self, task_id: str) -> ScheduledTaskDetail:
        """One scheduled task with its arguments (secret-looking values hidden);
        InvalidInput("task_id") when it is not scheduled (any more)."""
        _check_id(task_id)
        tag = self.client.hget(keys.SCHEDULE_IDS, task_id)
        found = self._envelopes([tag]) if tag is not None else []
        if not found:
            raise _not_scheduled(task_id)
        return self._detail(*found[0])

    def cancel(self, task_id: str) -> ScheduledTaskDetail:
        """Take ``task_id`` out of the schedule, so it never runs; returns what it was.

        Then its result is marked REVOKED (a client waiting for it gets
        TaskRevokedError) and a ``revoked`` row journaled. The removal is the cancel: if
        the result backend or the store fails after it, the task stays cancelled and
        the error is raised once both were tried. InvalidInput("task_id") when it is not
        scheduled: never was, cancelled already, or due and published meanwhile.
        """
        _check_id(task_id)
        raw = schedule.cancel(self.client, task_id)
        parsed = _opened(raw)
        if parsed is None:
            raise _not_scheduled(task_id)
        detail = self._detail(*parsed)
        failed: builtins.list[Exception] = []
        for step in (self._mark, self._journal_row):
            try:
                step(detail, parsed[1])
            except Exception as exc:  # the other step must still be tried
                log.warning("cancelled task not fully recorded", task_id=task_id,
                            step=step.__name__, error=f"{type(exc).__name__}: {exc}"[:300])
                failed.append(exc)
        log.info("scheduled task cancelled", task_id=task_id, task=detail.name,
                 queue=detail.queue, due=detail.due.isoformat())
        if failed:
            raise failed[0]
        return detail

    def _mark(self, detail: ScheduledTaskDetail, message: dict[str, Any]) -> None:
        self.mark_revoked(detail.id, f"{CANCEL_MESSAGE} ({detail.due.isoformat()})")

    def _journal_row(self, detail: ScheduledTaskDetail, message: dict[str, Any]) -> None:
        if self.journal is None:
            return
        call = _call(message)
        args, kwargs = ([], {}) if call is None else call
        now = datetime.now(UTC)
        number = self.journal.add({
            "task_id": detail.id, "name": detail.name, "queue": detail.queue,
            "state": JournalState.REVOKED, "attempt": detail.retries + 1,
            "args": self.redact(args), "kwargs": self.redact(kwargs), "result": None,
            "exc_type": "TaskRevokedError",
            "exc_message": f"{CANCEL_MESSAGE} (due {detail.due.isoformat()})",
            "traceback": None, "severity": None, "hostname": None, "pid": None,
            "started_at": None, "finished_at": now, "duration_ms": None,
        })
        # in the store before the caller is told (a CLI process exits right after); if
        # the store is away, the writer keeps the row and writes it when it answers
        if not self.journal.wait_written(number):
            log.warning("cancelled task's journal row not written yet (store unavailable)",
                        task_id=detail.id)

    def summary(self) -> ScheduleSummary:
        """Total, count per queue, counts due within 1 min / 1 h / 1 day, the next due
        time and the mover's lag: one round trip, whatever the number of tasks."""
        return summary_of(self.client)

