"""/api/tasks: submit a registered task by name; its status, progress, result; revoke."""

from __future__ import annotations

from typing import Annotated

from celery import states
from fastapi import APIRouter, Path, status

from taskworks.api.context import ApiContext, Ctx
from taskworks.api.errors import NotFound
from taskworks.api.models import (
    ID_PATTERN,
    Attempt,
    Revoke,
    Revoked,
    TaskProgress,
    TaskResult,
    TaskStatus,
    TaskSubmit,
    TaskSubmitted,
)
from taskworks.runtime import journal
from taskworks.runtime.progress import TaskSnapshot
from taskworks.submission import check_submittable

router = APIRouter(prefix="/api/tasks", tags=["tasks"])
TaskId = Annotated[str, Path(pattern=ID_PATTERN, description="the Celery task id")]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TaskSubmitted,
             responses={403: {"description": "api.submittable_tasks does not allow the task"}})
def submit(body: TaskSubmit, ctx: Ctx) -> TaskSubmitted:
    """Send a registered task by name (through ``tw.submit``), if ``api.submittable_tasks``
    allows it: by default every task of yours, no built-in but the health check."""
    check_submittable(ctx.settings, body.name)  # the api settings this server runs with
    result = ctx.tw.submit(body.name, body.args, body.kwargs, queue=body.queue,
                           priority=body.priority, countdown=body.countdown,
                           expires=body.expires)
    ctx.remember(result.id)
    return TaskSubmitted(id=result.id, name=body.name,
                         queue=body.queue or ctx.tw.route_of(body.name))


def _known(ctx: ApiContext, task_id: str) -> tuple[TaskSnapshot, list[Attempt], str | None]:
    """Backend state, journaled attempts and name; 404 when nothing knows the id.

    Celery reports PENDING for any id it has not seen: an id counts as known when the
    result backend, the journal or this API (it submitted it) has a trace of it.
    """
    progress = ctx.tw.progress(task_id)
    rows = journal.attempts(ctx.tw.store, task_id)
    if progress.state == states.PENDING and not rows and not ctx.submitted(task_id):
        raise NotFound("task", task_id)
    attempts = [Attempt(attempt=r.attempt, state=r.state, hostname=r.hostname,
                        started_at=r.started_at, finished_at=r.finished_at,
                        duration_ms=r.duration_ms, exc_type=r.exc_type,
                        exc_message=r.exc_message) for r in rows]
    return progress, attempts, rows[-1].name if rows else None


def _progress(p: TaskSnapshot) -> TaskProgress:
    return TaskProgress(id=p.task_id, state=p.state, current=p.current, total=p.total,
                        percent=p.percent, status=p.status)


def _result(p: TaskSnapshot) -> TaskResult:
    return TaskResult(id=p.task_id, state=p.state, ready=p.ready, result=p.result,
                      error=p.error)


@router.get("/{task_id}", response_model=TaskStatus)
def task_status(task_id: TaskId, ctx: Ctx) -> TaskStatus:
    """State, progress, result or error, and every journaled attempt."""
    progress, attempts, name = _known(ctx, task_id)
    return TaskStatus(**_result(progress).model_dump(), name=name,
                      progress=_progress(progress), attempts=attempts)


@router.get("/{task_id}/progress", response_model=TaskProgress)
def task_progress(task_id: TaskId, ctx: Ctx) -> TaskProgress:
    """What the task published with ``taskworks.progress``."""
    return _progress(_known(ctx, task_id)[0])


@router.get("/{task_id}/result", response_model=TaskResult)
def task_result(task_id: TaskId, ctx: Ctx) -> TaskResult:
    """The return value once it succeeded (``ready``), or the error."""
    return _result(_known(ctx, task_id)[0])


@router.post("/{task_id}/revoke", status_code=status.HTTP_202_ACCEPTED,
             response_model=Revoked)
def revoke(task_id: TaskId, ctx: Ctx, body: Revoke | None = None) -> Revoked:
    """Revoke by id: workers drop it when it arrives (``terminate`` also kills it if it
    runs). Any id is accepted: a task still waiting in its queue has no other trace."""
    terminate = body.terminate if body else False
    ctx.tw.app.control.revoke(task_id, terminate=terminate)
    return Revoked(id=task_id, revoked=True, terminate=terminate)
