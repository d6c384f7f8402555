"""The middleware protocol and the one dispatcher that runs it around every task.

Hooks, in order of a task's life (Dramatiq's middleware.py, adapted to Celery):

    before_task(ctx)        may raise to refuse the run (the refusal is the failure)
    after_success(ctx)      ctx.result is set
    after_failure(ctx)      ctx.exc is set; the *deciding* phase: the retry middleware
                            sets ctx.retry_in or ctx.exhausted_reason, severity is set
    on_retry(ctx)           the task will run again after ctx.retry_in seconds
    on_exhausted(ctx)       the task failed for good (ctx.exhausted_reason says why)
    on_revoked(ctx)         the task was revoked before or while running
    on_deferred(ctx)        a before_task hook deferred the task (``defer``): it runs
                            again later without spending a retry; ctx.exc says why
    on_worker_shutdown()    flush what is buffered

Every middleware declares the task options it accepts (``options``); ``@tw.task`` refuses
an option no middleware accepts, at declaration. A hook that raises (other than
``before_task``) is logged and never hides the task's own outcome.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from celery.exceptions import Ignore, Reject, Retry

from taskworks.errors import TaskMemoryError
from taskworks.logs import get_logger

log = get_logger("taskworks.runtime")


@dataclass(slots=True)
class TaskContext:
    """What middlewares know about one attempt of one task."""

    task: Any
    task_id: str
    name: str
    queue: str | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    #: 1-based; counts Celery retries and redeliveries after a lost worker
    attempt: int
    options: Mapping[str, Any]
    hostname: str | None
    redelivered: bool = False
    pid: int = field(default_factory=os.getpid)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.perf_counter)
    finished_at: datetime | None = None
    duration_ms: float | None = None
    result: Any = None
    exc: BaseException | None = None
    traceback: str | None = None
    severity: str | None = None
    #: set in after_failure by the retry middleware: run again after this many seconds
    retry_in: float | None = None
    #: set in after_failure when the task will not run again: why
    exhausted_reason: str | None = None
    #: set by a before_task hook that answers for the body (an idempotent task's stored
    #: result, in ctx.result): the body and the remaining before_task hooks do not run
    answered: bool = False

    def finish(self) -> None:
        self.finished_at = datetime.now(UTC)
        self.duration_ms = (time.perf_counter() - self.started) * 1000


class Middleware:
    """Base class: every hook is a no-op; override the ones you need."""

    #: task options this middleware accepts in ``@tw.task(...)``
    options: ClassVar[frozenset[str]] = frozenset()

    def validate(self, task_name: str, options: Mapping[str, Any]) -> None:
        """Check this middleware's options at declaration; raise InvalidInput when wrong."""

    def before_task(self, ctx: TaskContext) -> None: ...
    def after_success(self, ctx: TaskContext) -> None: ...
    def after_failure(self, ctx: TaskContext) -> None: ...
    def on_retry(self, ctx: TaskContext) -> None: ...
    def on_exhausted(self, ctx: TaskContext) -> None: ...
    def on_revoked(self, ctx: TaskContext) -> None: ...
    def on_deferred(self, ctx: TaskContext) -> None: ...
    def on_worker_shutdown(self) -> None: ...


def defer(task: Any, countdown: float, reason: BaseException | None = None) -> Retry:
    """Re-send the running task to run after ``countdown`` seconds WITHOUT spending a retry
    (a rate limit, a duplicate still running, an open breaker): raise what this returns
    from before_task. ``reason`` (e.g. BreakerOpen) is what the journal and RETRY show."""
    request = task.request
    retries = request.retries or 0
    request.retries = retries - 1  # Task.retry sends retries + 1: the count stays as it was
    try:
        deferral: Retry = task.retry(exc=reason, countdown=countdown, max_retries=None,
                                     throw=False)
    finally:
        request.retries = retries
    return deferral


class Runtime:
    """Runs the middleware chain around a task's body."""

    def __init__(self, middlewares: Iterable[Middleware] = ()) -> None:
        self.middlewares: list[Middleware] = list(middlewares)

    def add(self, middleware: Middleware) -> None:
        self.middlewares.append(middleware)

    def get(self, kind: type[Middleware]) -> Any:
        for middleware in self.middlewares:
            if isinstance(middleware, kind):
                return middleware
        raise LookupError(kind.__name__)

    def option_names(self) -> frozenset[str]:
        return frozenset().union(*(m.options for m in self.middlewares))

    def validate(self, task_name: str, options: Mapping[str, Any]) -> None:
        for middleware in self.middlewares:
            middleware.validate(task_name, options)

    def _each(self, hook: str, *args: Any) -> None:
        for middleware in self.middlewares:
            try:
                getattr(middleware, hook)(*args)
            except Exception:
                log.exception("middleware hook failed", middleware=type(middleware).__name__,
                              hook=hook)

    def context(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> TaskContext:
        request = task.request
        info = request.delivery_info or {}
        return TaskContext(
            task=task, task_id=request.id or "", name=task.name,
            queue=info.get("routing_key"), args=args, kwargs=kwargs,
            attempt=(request.retries or 0) + 1,
            options=getattr(task, "taskworks_options", {}),
            hostname=request.hostname, redelivered=bool(info.get("redelivered")),
        )

    def execute(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                body: Callable[..., Any]) -> Any:
        ctx = self.context(task, args, kwargs)
        in_body = False
        try:
            for middleware in self.middlewares:
                middleware.before_task(ctx)
                if ctx.answered:
                    break
            if not ctx.answered:
                in_body = True
                ctx.result = body(*args, **kwargs)
        except Retry as retry:
            if not in_body:  # a before_task hook deferred the task (see defer)
                self._deferred(ctx, retry)
            raise
        except (Ignore, Reject):
            raise  # the task steered Celery itself
        except Exception as exc:
            self._fail(ctx, exc)
        ctx.finish()
        self._each("after_success", ctx)
        return ctx.result

    def _deferred(self, ctx: TaskContext, retry: Retry) -> None:
        # hooks that acted in before_task (a breaker's probe, a lock) undo it here
        ctx.exc = retry.exc if isinstance(retry.exc, BaseException) else None
        ctx.finish()
        self._each("on_deferred", ctx)

    def _fail(self, ctx: TaskContext, exc: Exception) -> None:
        ctx.exc = exc
        ctx.traceback = "".join(traceback.format_exception(exc))
        ctx.finish()
        self._each("after_failure", ctx)
        if ctx.retry_in is not None:
            self._each("on_retry", ctx)
            # max_retries=None: our policy decided; Celery must not apply its own limit
            raise ctx.task.retry(exc=exc, countdown=ctx.retry_in, max_retries=None)
        ctx.exhausted_reason = ctx.exhausted_reason or "failed"
        self._each("on_exhausted", ctx)
        if isinstance(exc, MemoryError):
            raise TaskMemoryError(str(exc) or "MemoryError") from exc
        raise exc

    def revoked(self, ctx: TaskContext) -> None:
        ctx.finish()
        self._each("on_revoked", ctx)

    def shutdown(self) -> None:
        self._each("on_worker_shutdown")
