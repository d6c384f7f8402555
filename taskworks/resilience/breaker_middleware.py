"""The task option ``breaker="name"``: a task guarded by a circuit breaker.

Before the body runs the breaker admits the task (one round trip); while it is open the
task is deferred (``runtime.middleware.defer``) until the breaker may half-open, without
spending a retry, and the deferral is journaled. The body's outcome is reported to the
breaker (one round trip). ``breaker`` may also be a function of the task's arguments
returning a name or None (http_call guards each host with its own breaker).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from taskworks.errors import BreakerOpen, InvalidInput
from taskworks.logs import get_logger
from taskworks.resilience.breaker import Admission, CircuitBreaker, check_name
from taskworks.resilience.breaker_registry import Breakers
from taskworks.runtime.middleware import Middleware, TaskContext, defer

__all__ = ["MIN_DEFER", "BreakerMiddleware", "BreakerName"]

log = get_logger("taskworks.breaker")

#: never re-send a deferred task sooner than this (the breaker may be about to half-open)
MIN_DEFER = 0.1

BreakerName = Callable[[tuple[Any, ...], dict[str, Any]], str | None]


class BreakerMiddleware(Middleware):
    options = frozenset({"breaker"})

    def __init__(self, breakers: Breakers) -> None:
        self.breakers = breakers
        # admissions of the attempts running in this process, by context identity
        self._admitted: dict[int, tuple[CircuitBreaker, Admission]] = {}

    def validate(self, task_name: str, options: Mapping[str, Any]) -> None:
        choice = options.get("breaker")
        if choice is None or callable(choice):
            return
        if not isinstance(choice, str):
            raise InvalidInput("breaker", choice,
                               "a breaker name, or a function of (args, kwargs) returning one")
        check_name(choice)

    def _name(self, ctx: TaskContext) -> str | None:
        choice = ctx.options.get("breaker")
        if callable(choice):
            name: str | None = choice(ctx.args, ctx.kwargs)
            return name
        return choice if isinstance(choice, str) else None

    def before_task(self, ctx: TaskContext) -> None:
        name = self._name(ctx)
        if name is None:
            return
        breaker = self.breakers.get(name)
        admission = breaker.try_admit()
        if isinstance(admission, BreakerOpen):
            countdown = max(admission.retry_after, MIN_DEFER)
            log.info("task deferred: breaker open", breaker=name, task=ctx.name,
                     task_id=ctx.task_id, countdown=round(countdown, 3))
            raise defer(ctx.task, countdown, admission)
        self._admitted[id(ctx)] = (breaker, admission)

    def after_success(self, ctx: TaskContext) -> None:
        entry = self._admitted.pop(id(ctx), None)
        if entry is None:
            return
        breaker, admission = entry
        if ctx.answered:  # an idempotent task's stored result: the downstream was not called
            breaker.release(admission)
        else:
            breaker.record(admission)

    def after_failure(self, ctx: TaskContext) -> None:
        entry = self._admitted.pop(id(ctx), None)
        if entry is not None:
            entry[0].record(entry[1], ctx.exc)

    def _release(self, ctx: TaskContext) -> None:
        entry = self._admitted.pop(id(ctx), None)
        if entry is not None:
            entry[0].release(entry[1])

    def on_deferred(self, ctx: TaskContext) -> None:
        self._release(ctx)  # a later middleware deferred the task: give a probe back

    def on_revoked(self, ctx: TaskContext) -> None:
        self._release(ctx)
