"""Progress of a running task: published by the task, read by anyone holding its id.

Inside a task, ``progress(current, total, status)`` stores Celery state ``PROGRESS``
with the meta ``{"current", "total", "status", "percent"}`` in the result backend, so
any process with the task id (``read_progress``, ``taskworks watch``, ``AsyncResult``)
sees how far it is. Each call is one write to the result backend (Celery reads the key
first, so a late update never overwrites a SUCCESS), nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from celery import Celery, current_task, states
from celery.result import AsyncResult

from taskworks.errors import InvalidInput, TaskworksError
from taskworks.redaction import error_message, redact_text

__all__ = ["PROGRESS", "Number", "TaskSnapshot", "describe_error", "percent_of", "progress",
           "read_progress"]

PROGRESS = "PROGRESS"

Number = int | float


def _check_number(field: str, value: object) -> float:
    # bool is an int to Python, but progress(True, 3) is a bug, not a step
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(field, value, "a finite number >= 0")
    if value < 0:
        raise InvalidInput(field, value, "a finite number >= 0")
    return float(value)


def percent_of(current: Number, total: Number) -> float:
    """Percent done, one decimal; 0 when there is nothing to do (total 0)."""
    return round(current / total * 100, 1) if total else 0.0


def progress(current: Number, total: Number, status: str = "") -> None:
    """Publish the running task's progress: state ``PROGRESS`` with current/total/status/percent.

    Arguments are checked before anything else, so a bad call fails the same way in a
    task and out of one.
    """
    _check_number("current", current)
    total_value = _check_number("total", total)
    if current > total_value:
        raise InvalidInput("current", current, f"a number from 0 to total ({total})")
    if not isinstance(status, str):
        raise InvalidInput("status", status, "a string")
    task = current_task._get_current_object()  # the real task or None, not the proxy
    # a task function called directly (tests, helpers) has no id: nothing to publish to
    if task is None or task.request.id is None:
        raise TaskworksError(
            "progress() must be called inside a task (no task is running in this thread)"
        )
    task.update_state(state=PROGRESS, meta={
        "current": current, "total": total, "status": status,
        "percent": percent_of(current, total),
    })


@dataclass(frozen=True)
class TaskSnapshot:
    """A snapshot of a task as seen from outside.

    ``current``/``total`` are known only while the task reports ``PROGRESS``. ``result``
    is set on ``SUCCESS``; ``error`` ("ExcType: message") on ``FAILURE``, ``REVOKED`` and
    ``RETRY`` (the reason of the retry).
    """

    task_id: str
    state: str
    current: float | None = None
    total: float | None = None
    status: str = ""
    percent: float = 0.0
    result: Any = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        """The task will not change any more (success, failure or revoked)."""
        return bool(self.state in states.READY_STATES)

    @property
    def succeeded(self) -> bool:
        return bool(self.state == states.SUCCESS)


def describe_error(exc: object) -> str:
    """``ExcType: message`` (just ``ExcType`` when the message is empty), with what
    looks secret hidden (a database error's bound values, a URL's credentials)."""
    if not isinstance(exc, BaseException):
        return redact_text(str(exc))
    message = error_message(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _number_or_none(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def read_progress(app: Celery, task_id: str) -> TaskSnapshot:
    """Where the task ``task_id`` is now, read from ``app``'s result backend.

    ``PENDING`` also means "unknown id" (Celery cannot tell them apart) or "expired".
    """
    result = AsyncResult(task_id, app=app)
    # one read for state and payload: AsyncResult.state then .info would read twice and
    # could pair a PROGRESS state with the SUCCESS result that landed in between
    meta: dict[str, Any] = result.backend.get_task_meta(result.id)
    state = str(meta.get("status") or states.PENDING)
    payload = meta.get("result")
    if state == states.SUCCESS:
        return TaskSnapshot(task_id, state, percent=100.0, result=payload)
    if state in (states.FAILURE, states.REVOKED):
        return TaskSnapshot(task_id, state, status=state.lower(), error=describe_error(payload))
    if state == states.RETRY:
        return TaskSnapshot(task_id, state, status="retrying", error=describe_error(payload))
    if isinstance(payload, dict) and "percent" in payload:
        # PROGRESS, or a custom state whose meta follows the same shape
        current = _number_or_none(payload.get("current"))
        total = _number_or_none(payload.get("total"))
        percent = _number_or_none(payload.get("percent"))
        return TaskSnapshot(
            task_id, state, current=current, total=total,
            status=str(payload.get("status") or ""),
            percent=float(percent) if percent is not None else 0.0,
        )
    # PENDING, STARTED (meta: pid and hostname) and custom states without progress
    return TaskSnapshot(task_id, state, status=state.lower())
