"""The middleware protocol and the one dispatcher that runs it around every task.

Hooks, in order of a task's life (Dramatiq's middleware.py, adapted to Celery):

    before_task(ctx)        may raise to refuse the run (the refusal is the failure)
    after_success(ctx)      ctx.result is set
    after_failure(ctx)      ctx.exc is set; the *deciding* phase: the retry middleware
                            sets ctx.retry_in or ctx.exhausted_reason, severity is set
    on_retry(ctx)           the task will run again after ctx.retry_in seconds
    on_exhausted(ctx)       the task failed for good (ctx.exhausted_reason says why)
    on_revoked(ctx)         the task was revoked before or while running; with
                            ctx.expired, it was not started before its deadline
    on_scheduled(ctx)       the task was published to run later (the durable schedule
                            keeps it): ctx.result holds its due time and deadline
    on_deferred(ctx)        a before_task hook deferred the task (``defer``): it runs
                            again later without spending a retry; ctx.exc says why
    on_requeued(ctx)        the outcome could not be recorded (store or broker down):
                            the message goes back to the queue unacknowledged and this
                            attempt runs again; ctx.exc says why
    on_worker_shutdown()    flush what is buffered

Every middleware declares the task options it accepts (``options``); ``@tw.task`` refuses
an option no middleware accepts, at declaration. A hook that raises (other than
``before_task``) is logged and never hides the task's own outcome, with one exception:
a middleware that *records* the outcome (``records_outcome``: the dead-letter store, the
journal's barrier) and fails because the store or the broker is unavailable. Then the
outcome is not recorded anywhere, so the message must not be acknowledged: the runtime
raises Celery's ``Reject(requeue=True)`` after ``on_requeued`` and a short pause, the
message is redelivered, and the redelivery records the outcome once (the outcome guard
stops a copy whose outcome did land).
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

import redis
from celery.exceptions import Ignore, Reject, Retry
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.exc import DisconnectionError, InterfaceError
from sqlalchemy.exc import OperationalError as StoreOperationalError
from sqlalchemy.exc import TimeoutError as StorePoolTimeout

from taskworks.errors import InvalidInput, OutcomeNotRecorded, TaskMemoryError
from taskworks.logs import get_logger

__all__ = ["INFRASTRUCTURE_ERRORS", "REQUEUE_DELAY", "Middleware", "Runtime", "TaskContext",
           "defer", "requeue_message"]

log = get_logger("taskworks.runtime")

#: failures of the store or the broker themselves (down, locked, full, unreachable), as
#: opposed to a bug or a refused value: recording again later can succeed
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    StoreOperationalError, InterfaceError, DisconnectionError, StorePoolTimeout,
    redis.RedisError, KombuOperationalError, OSError, OutcomeNotRecorded,
)
#: seconds a worker waits before requeueing a message whose outcome it could not record:
#: an outage must not turn into a hot loop of redeliveries
REQUEUE_DELAY = 1.0


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
    #: the attempt's outcome was already acted on (Celery sent its retry, a deferral
    #: re-sent it): a failure to record it can no longer be undone by a requeue
    acted: bool = False
    #: another copy of this task already ended it (its dead letter exists): this
    #: attempt's end is not recorded again
    ended_elsewhere: bool = False
    #: revoked because it was not started before its ``expires`` deadline
    expired: bool = False

    def finish(self) -> None:
        self.finished_at = datetime.now(UTC)
        self.duration_ms = (time.perf_counter() - self.started) * 1000


class Middleware:
    """Base class: every hook is a no-op; override the ones you need."""

    #: task options this middleware accepts in ``@tw.task(...)``
    options: ClassVar[frozenset[str]] = frozenset()
    #: True for a middleware whose hooks record the outcome: when one fails because the
    #: store or broker is unavailable, the message is requeued, not acknowledged
    records_outcome: ClassVar[bool] = False
    #: True for a middleware that must stay after every other (the journal's barrier):
    #: a middleware added later goes before it
    last: ClassVar[bool] = False

    def validate(self, task_name: str, options: Mapping[str, Any]) -> None:
        """Check this middleware's options at declaration; raise InvalidInput when wrong."""

    def before_task(self, ctx: TaskContext) -> None: ...
    def after_success(self, ctx: TaskContext) -> None: ...
    def after_failure(self, ctx: TaskContext) -> None: ...
    def on_retry(self, ctx: TaskContext) -> None: ...
    def on_exhausted(self, ctx: TaskContext) -> None: ...
    def on_revoked(self, ctx: TaskContext) -> None: ...
    def on_scheduled(self, ctx: TaskContext) -> None: ...
    def on_deferred(self, ctx: TaskContext) -> None: ...
    def on_requeued(self, ctx: TaskContext) -> None: ...
    def on_worker_shutdown(self) -> None: ...


def defer(task: Any, countdown: float, reason: BaseException | None = None) -> Retry:
    """Re-send the running task to run after ``countdown`` seconds WITHOUT spending a retry
    (a rate limit, a duplicate still running, an open breaker): raise what this returns
    from before_task. ``reason`` (e.g. BreakerOpen) is what the journal and RETRY show."""
    own = getattr(task, "defer", None)
    if callable(own):  # a task with its own way to defer (a workflow step: engine.py)
        deferral: Retry = own(countdown, reason)
    else:
        request = task.request
        retries = request.retries or 0
        request.retries = retries - 1  # Task.retry sends retries + 1: the count stays
        try:
            deferral = task.retry(exc=reason, countdown=countdown, max_retries=None,
                                  throw=False)
        finally:
            request.retries = retries
    deferral.taskworks_deferred = True  # journaled as "deferred", even raised from a body
    return deferral


def requeue_message(cause: BaseException, delay: float = REQUEUE_DELAY) -> Reject:
    """What to raise so that a message whose work could not be recorded goes back to its
    queue instead of being acknowledged (after ``delay``: an outage is not a hot loop)."""
    time.sleep(delay)
    reject = Reject(cause, requeue=True)
    reject.__cause__ = cause
    return reject


class Runtime:
    """Runs the middleware chain around a task's body."""

    def __init__(self, middlewares: Iterable[Middleware] = (),
                 requeue_delay: float = REQUEUE_DELAY) -> None:
        self.middlewares: list[Middleware] = list(middlewares)
        self.requeue_delay = requeue_delay

    def add(self, middleware: Middleware, *, before: type[Middleware] | None = None,
            after: type[Middleware] | None = None) -> None:
        """Put ``middleware`` right before the first middleware of kind ``before``, or
        right after the first of kind ``after``; by default at the end, but always before
        a middleware that must stay last."""
        if before is not None and after is not None:
            raise InvalidInput("before", before.__name__, "before or after, not both")
        anchor = before or after
        index = len(self.middlewares)
        if anchor is not None:
            found = next((i for i, m in enumerate(self.middlewares) if isinstance(m, anchor)),
                         None)
            if found is None:
                raise InvalidInput("before" if before else "after", anchor.__name__,
                                   "the class of a middleware in the chain: " + ", ".join(
                                       type(m).__name__ for m in self.middlewares))
            index = found if before is not None else found + 1
        while index > 0 and self.middlewares[index - 1].last and not middleware.last:
            index -= 1
        self.middlewares.insert(index, middleware)

    def get(self, kind: type[Middleware]) -> Any:
        for middleware in self.middlewares:
            if isinstance(middleware, kind):
                return middleware
        raise LookupError(kind.__name__)

    def with_inserted(self, middleware: Middleware, after: type[Middleware]) -> list[Middleware]:
        """The chain with ``middleware`` right after the first of kind ``after`` (for one
        execution: a workflow step's recorder)."""
        chain = list(self.middlewares)
        index = next((i + 1 for i, m in enumerate(chain) if isinstance(m, after)), len(chain))
        chain.insert(index, middleware)
        return chain

    def option_names(self) -> frozenset[str]:
        return frozenset().union(*(m.options for m in self.middlewares))

    def validate(self, task_name: str, options: Mapping[str, Any]) -> None:
        for middleware in self.middlewares:
            middleware.validate(task_name, options)

    @staticmethod
    def _each(chain: list[Middleware], hook: str, *args: Any) -> None:
        for middleware in chain:
            try:
                getattr(middleware, hook)(*args)
            except Exception:
                log.exception("middleware hook failed", middleware=type(middleware).__name__,
                              hook=hook)

    def _record(self, chain: list[Middleware], hook: str, ctx: TaskContext) -> None:
        """Run a hook that records the outcome: a recording middleware that fails because
        the store or the broker is down requeues the message (it raises Reject)."""
        for middleware in chain:
            try:
                getattr(middleware, hook)(ctx)
            except Exception as exc:
                if middleware.records_outcome and isinstance(exc, INFRASTRUCTURE_ERRORS):
                    self._requeue(chain, ctx, exc, f"{type(middleware).__name__}.{hook}")
                log.exception("middleware hook failed", middleware=type(middleware).__name__,
                              hook=hook)

    def _requeue(self, chain: list[Middleware], ctx: TaskContext, cause: BaseException,
                 where: str) -> None:
        """The outcome could not be recorded: put the message back (never acknowledge
        it), so that the task runs again and its outcome is recorded once."""
        reason = OutcomeNotRecorded(f"{where}: {type(cause).__name__}: {cause}"[:500])
        if ctx.acted:
            # what the outcome set in motion is sent already: a requeue would repeat it
            log.error("outcome recorded only in part; the message is acknowledged",
                      task=ctx.name, task_id=ctx.task_id, error=str(reason))
            return
        if not getattr(ctx.task, "acks_late", False):
            # the message was acknowledged before the task ran: nothing can bring it back
            log.error("outcome not recorded and the message is already acknowledged "
                      "(acks_late is off): this outcome is lost", task=ctx.name,
                      task_id=ctx.task_id, error=str(reason))
            return
        log.error("outcome not recorded: message requeued, the task runs again",
                  task=ctx.name, task_id=ctx.task_id, error=str(reason))
        failure, ctx.exc = ctx.exc, reason
        self._each(chain, "on_requeued", ctx)
        ctx.exc = failure
        raise requeue_message(reason, self.requeue_delay) from cause

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
        return self.run(self.context(task, args, kwargs), lambda: body(*args, **kwargs))

    def run(self, ctx: TaskContext, body: Callable[[], Any],
            chain: list[Middleware] | None = None) -> Any:
        """The chain around ``body`` for the attempt ``ctx`` describes (``chain``: this
        runtime's middlewares, or a variant of them from ``with_inserted``)."""
        chain = self.middlewares if chain is None else chain
        in_body = False
        try:
            for middleware in chain:
                middleware.before_task(ctx)
                if ctx.answered:
                    break
            if not ctx.answered:
                in_body = True
                ctx.result = body()
        except Retry as retry:
            if not in_body or getattr(retry, "taskworks_deferred", False):
                self._deferred(chain, ctx, retry)  # a hook (or the body) deferred it: defer
            else:  # the body asked Celery for a retry (self.retry, autoretry_for)
                self._retried_by_body(chain, ctx, retry)
            raise
        except Reject as rejected:
            if in_body and not rejected.requeue and isinstance(rejected.reason,
                                                               INFRASTRUCTURE_ERRORS):
                # Celery's Task.retry could not publish the retry and would drop the
                # message (Reject(requeue=False)): requeue it instead
                self._requeue(chain, ctx, rejected.reason, "retry publish")
            raise  # the task steered Celery itself
        except Ignore:
            raise  # the task steered Celery itself
        except Exception as exc:
            self._fail(chain, ctx, exc)
        ctx.finish()
        self._record(chain, "after_success", ctx)
        return ctx.result

    def _deferred(self, chain: list[Middleware], ctx: TaskContext, retry: Retry) -> None:
        # hooks that acted in before_task (a breaker's probe, a lock) undo it here
        ctx.exc = retry.exc if isinstance(retry.exc, BaseException) else None
        ctx.acted = True
        ctx.finish()
        self._each(chain, "on_deferred", ctx)

    def _retried_by_body(self, chain: list[Middleware], ctx: TaskContext,
                         retry: Retry) -> None:
        # Celery already sent the retry: recording it can fail, never undo it
        ctx.exc = retry.exc if isinstance(retry.exc, BaseException) else retry
        ctx.traceback = "".join(traceback.format_exception(ctx.exc))
        when = retry.when
        if isinstance(when, int | float) and not isinstance(when, bool):
            ctx.retry_in = float(when)
        elif isinstance(when, datetime):
            ctx.retry_in = max(0.0, (when - datetime.now(when.tzinfo or UTC)).total_seconds())
        ctx.acted = True
        ctx.finish()
        self._each(chain, "on_retry", ctx)

    def _fail(self, chain: list[Middleware], ctx: TaskContext, exc: Exception) -> None:
        ctx.exc = exc
        ctx.traceback = "".join(traceback.format_exception(exc))
        ctx.finish()
        self._each(chain, "after_failure", ctx)
        if ctx.retry_in is not None:
            self._record(chain, "on_retry", ctx)
            try:
                # max_retries=None: our policy decided; Celery must not apply its own limit
                retry = ctx.task.retry(exc=exc, countdown=ctx.retry_in, max_retries=None,
                                       throw=False)
            except Reject as rejected:  # Celery could not publish the retry
                cause = rejected.reason if isinstance(rejected.reason, BaseException) \
                    else rejected
                self._requeue(chain, ctx, cause, "retry publish")
                raise
            raise retry
        ctx.exhausted_reason = ctx.exhausted_reason or "failed"
        self._record(chain, "on_exhausted", ctx)
        if isinstance(exc, MemoryError):
            raise TaskMemoryError(str(exc) or "MemoryError") from exc
        raise exc

    def revoked(self, ctx: TaskContext) -> None:
        ctx.finish()
        self._each(self.middlewares, "on_revoked", ctx)

    def scheduled(self, ctx: TaskContext) -> None:
        ctx.finish()
        self._each(self.middlewares, "on_scheduled", ctx)

    def shutdown(self) -> None:
        self._each(self.middlewares, "on_worker_shutdown")
