"""/api/scheduled: delayed tasks waiting in the durable schedule: list, counts, show,
cancel. The bodies are the library's own pydantic models (scheduling/delayed.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from taskworks.api.context import Ctx
from taskworks.api.errors import NotFound
from taskworks.api.models import ID_PATTERN
from taskworks.errors import InvalidInput
from taskworks.scheduling.delayed import (
    MAX_LIMIT,
    SCAN_LIMIT,
    ScheduledTask,
    ScheduledTaskDetail,
    ScheduleSummary,
)

router = APIRouter(prefix="/api/scheduled", tags=["scheduled tasks"])
TaskId = Annotated[str, Path(pattern=ID_PATTERN, description="the Celery task id")]


def _not_found(exc: InvalidInput) -> Exception:
    """A task that is not scheduled (any more) is a 404; other bad input stays a 422."""
    return NotFound("scheduled task", exc.value) if exc.field == "task_id" else exc


@router.get("", response_model=list[ScheduledTask])
def scheduled_list(
    ctx: Ctx,
    queue: Annotated[str | None, Query(min_length=1, max_length=128, description=(
        f"only tasks bound for this queue (among the first {SCAN_LIMIT} due)"))] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> list[ScheduledTask]:
    """Scheduled tasks, the earliest due first."""
    return ctx.tw.scheduled.list(queue=queue, limit=limit, offset=offset)


@router.get("/summary", response_model=ScheduleSummary)
def scheduled_summary(ctx: Ctx) -> ScheduleSummary:
    """How many tasks are scheduled, by queue and by how soon they are due; the next due
    time; how many seconds the mover is behind (0 when no task is overdue)."""
    return ctx.tw.scheduled.summary()


@router.get("/{task_id}", response_model=ScheduledTaskDetail)
def scheduled_show(task_id: TaskId, ctx: Ctx) -> ScheduledTaskDetail:
    """One scheduled task with its arguments (secret-looking values hidden)."""
    try:
        return ctx.tw.scheduled.show(task_id)
    except InvalidInput as exc:
        raise _not_found(exc) from None


@router.delete("/{task_id}", response_model=ScheduledTaskDetail)
def scheduled_cancel(task_id: TaskId, ctx: Ctx) -> ScheduledTaskDetail:
    """Cancel a task before it is due: it never runs, its result becomes REVOKED and the
    journal records it. 404 when it is not scheduled (any more: a task that is due has
    been published; revoke it through /api/tasks instead)."""
    try:
        return ctx.tw.scheduled.cancel(task_id)
    except InvalidInput as exc:
        raise _not_found(exc) from None
