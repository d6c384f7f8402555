"""When a task is published to run: its due time (``countdown``, ``eta``) and its deadline
to start (``expires``, a task's ``start_within``), read and checked in one place.

The due time decides where the message waits (the durable schedule, broker/schedule.py);
the deadline is Celery's ``expires``: a worker that takes the message after it does not
run the task, and the journal records it as ``expired`` (runtime/journal).
"""

from __future__ import annotations

import contextlib
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from taskworks.errors import InvalidInput
from taskworks.runtime.middleware import Runtime, TaskContext

__all__ = ["apply_deadline", "check_start_within", "checked_times", "due_time",
           "journal_scheduled", "when"]


def when(field: str, value: Any, now: datetime) -> datetime | None:
    """``value`` as an aware UTC datetime: seconds from ``now`` (a finite number >= 0) or
    an aware datetime; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidInput(field, value, "seconds from now (>= 0) or an aware datetime")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0 or value > 10 * 366 * 86400:
            raise InvalidInput(field, value, "seconds from now, >= 0 and at most ten years")
        return now + timedelta(seconds=value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidInput(field, value.isoformat(), "an aware datetime (with a time zone)")
        return value.astimezone(UTC)
    raise InvalidInput(field, value, "seconds from now (>= 0) or an aware datetime")


def due_time(options: dict[str, Any], now: datetime) -> datetime | None:
    """When a publish with these ``apply_async`` options is due; None for at once. As
    lenient as Celery (a caller's own ``apply_async`` is not refused here): a naive
    ``eta`` is UTC, and what is not a time is left to Celery."""
    eta = options.get("eta")
    if isinstance(eta, str):
        with contextlib.suppress(ValueError):
            eta = datetime.fromisoformat(eta)
    if isinstance(eta, datetime):
        return eta.replace(tzinfo=UTC) if eta.tzinfo is None else eta.astimezone(UTC)
    countdown = options.get("countdown")
    if isinstance(countdown, int | float) and not isinstance(countdown, bool) \
            and math.isfinite(countdown):
        return now + timedelta(seconds=countdown)
    return None


def check_start_within(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value <= 0:
        raise InvalidInput("start_within", value, "seconds, a number > 0")
    return float(value)


def apply_deadline(options: dict[str, Any], start_within: float | None,
                   now: datetime) -> datetime | None:
    """Set ``options["expires"]`` from a task's ``start_within`` (counted from its due
    time) when the caller gave none; returns the deadline, if any, as a datetime."""
    expires = options.get("expires")
    if expires is None and start_within is not None:
        deadline = (due_time(options, now) or now) + timedelta(seconds=start_within)
        options["expires"] = deadline
        return deadline
    if isinstance(expires, str):
        with contextlib.suppress(ValueError):
            expires = datetime.fromisoformat(expires)
    if isinstance(expires, datetime):
        return expires.replace(tzinfo=UTC) if expires.tzinfo is None else expires
    if isinstance(expires, int | float) and not isinstance(expires, bool) \
            and math.isfinite(expires):
        return now + timedelta(seconds=expires)
    return None


def checked_times(countdown: Any, eta: Any, expires: Any,
                  now: datetime) -> tuple[datetime | None, datetime | None]:
    """A caller's due time and deadline, checked (``tw.submit``, ``tw.submit_many``):
    one of countdown or eta, and a deadline after the due time."""
    if countdown is not None and eta is not None:
        raise InvalidInput("eta", str(eta), "either countdown or eta, not both")
    due = when("eta", eta, now) if eta is not None else when("countdown", countdown, now)
    deadline = when("expires", expires, now)
    if deadline is not None and due is not None and deadline <= due:
        raise InvalidInput("expires", deadline.isoformat(),
                           f"a deadline after the due time ({due.isoformat()})")
    return due, deadline


def journal_scheduled(runtime: Runtime, task: Any, task_id: str, queue: str | None,
                      args: Any, kwargs: Any, due: datetime,
                      deadline: datetime | None) -> None:
    """The ``scheduled`` row of a task published to run at ``due`` (its middlewares'
    ``on_scheduled``), written by the publishing process."""
    ctx = TaskContext(task=task, task_id=task_id, name=task.name, queue=queue,
                      args=tuple(args or ()), kwargs=dict(kwargs or {}), attempt=1,
                      options=getattr(task, "taskworks_options", {}), hostname=None)
    ctx.result = {"due": due.isoformat(), "expires": deadline.isoformat() if deadline else None}
    runtime.scheduled(ctx)
