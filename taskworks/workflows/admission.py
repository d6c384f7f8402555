"""A step task's own admission control, applied inside the workflow step wrapper.

The engine calls a step task's body in-process (``task.run``), so the middleware chain
that guards the task when it is sent on its own does not run. Two of its middlewares
decide whether a call may reach a downstream at all, and a workflow must obey them too:
the circuit breaker (``breaker=``) and the rate limit (``rate_limit=``). ``StepGuards``
runs exactly those, with the step task's options, around the body: an open breaker or a
spent rate limit defers the step (it goes back to QUEUED without spending a try, and its
message is re-sent after the countdown), and the body's outcome is reported to the
breaker. The other middlewares are the wrapper's business (journal, retries) or do not
apply to steps (idempotency: a step already runs once per token).
"""

from __future__ import annotations

from typing import Any

from celery.exceptions import Retry

from taskworks.logs import get_logger
from taskworks.resilience.breaker_middleware import BreakerMiddleware
from taskworks.resilience.ratelimit import RateLimitMiddleware
from taskworks.runtime.middleware import Middleware, TaskContext

log = get_logger("taskworks.workflows")

#: the step task's middlewares that run inside the wrapper, in the chain's order
ADMISSION = (BreakerMiddleware, RateLimitMiddleware)


class _Deferral:
    """Stands in for the wrapper task while the guards run: a guard that defers asks for
    a retry, and gets it back unsent. The engine requeues the step first and sends the
    message after, or the re-sent message could find its step still RUNNING."""

    def __init__(self, wrapper: Any) -> None:
        self.request = wrapper.request
        self.name = wrapper.name

    def retry(self, exc: BaseException | None = None, countdown: float | None = None,
              **_: Any) -> Retry:
        return Retry(exc=exc, when=countdown)


class StepGuards:
    def __init__(self, task: Any, wrapper: Any, step_task: str, kwargs: dict[str, Any],
                 attempt: int) -> None:
        runtime = getattr(task, "runtime", None)
        middlewares: list[Middleware] = list(runtime.middlewares) if runtime else []
        self.guards = [m for m in middlewares if isinstance(m, ADMISSION)]
        request = wrapper.request
        self.ctx = TaskContext(
            task=_Deferral(wrapper), task_id=request.id or "", name=step_task, queue=None,
            args=(), kwargs=kwargs, attempt=attempt,
            options=getattr(task, "taskworks_options", {}) or {},
            hostname=request.hostname)

    def admit(self) -> None:
        """Raises Retry (unsent: ``when`` is the countdown) when a guard defers the step."""
        try:
            for guard in self.guards:
                guard.before_task(self.ctx)
        except Retry:
            self._each("on_deferred")  # a guard that admitted gives its probe back
            raise

    def succeeded(self, result: Any) -> None:
        self.ctx.result = result
        self.ctx.finish()
        self._each("after_success")

    def failed(self, exc: BaseException) -> None:
        self.ctx.exc = exc
        self.ctx.finish()
        self._each("after_failure")

    def withdrawn(self) -> None:
        self._each("on_deferred")

    def _each(self, hook: str) -> None:
        for guard in self.guards:
            try:
                getattr(guard, hook)(self.ctx)
            except Exception:  # a guard's bookkeeping never decides the step's outcome
                log.exception("step guard hook failed", guard=type(guard).__name__,
                              hook=hook, step_task=self.ctx.name)
