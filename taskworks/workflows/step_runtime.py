"""A workflow step runs through its step task's own middleware chain.

The wrapper task (``taskworks.workflow_step``) carries no chain of its own; the engine
runs the one runtime around the step's body as the step task: its breaker, rate limit,
idempotency, retry policy (the step's ``retries`` or the task's), severity, journal,
dead-letter store and notifications all see the step. Two pieces make the step's state
in the store follow what the chain decides:

- ``StepHandle`` stands in for the task in the chain's context. When the chain retries
  the step, the step goes back to QUEUED (spending the try) before Celery re-sends the
  wrapper's message; when a middleware defers it (an open breaker, a spent rate limit,
  a duplicate running), back to QUEUED giving the try back, again before the message
  is re-sent, so the re-sent message always finds its step QUEUED.
- ``StepRecorder`` records the step's end in the run: succeeded (dependents are
  dispatched), or failed for good (after its dead letter, so a letter that cannot be
  written leaves the step RUNNING and its message requeued). It records the outcome:
  if the store is down it fails, and the runtime requeues the message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.exceptions import Ignore, Retry

from taskworks.runtime.middleware import Middleware, TaskContext, defer
from taskworks.workflows.model import StepState

__all__ = ["StepHandle", "StepRecorder"]


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class StepHandle:
    """The task a step's chain sees: the wrapper's request and message, the step's
    state transitions before each re-send."""

    #: the step's state in the store tells whether it ended (the outcome guard defers)
    is_workflow_step = True

    def __init__(self, wrapper: Any, requeue: Callable[[str], bool],
                 give_back: Callable[[str], bool]) -> None:
        self.wrapper = wrapper
        self.request = wrapper.request
        self.name = wrapper.name
        self.app = wrapper.app
        self.acks_late = True
        self._requeue = requeue
        self._give_back = give_back

    def retry(self, exc: BaseException | None = None, countdown: float | None = None,
              max_retries: int | None = None, throw: bool = True, **_: Any) -> Retry:
        if not self._requeue(describe(exc) if exc is not None else "retry"):
            raise Ignore()  # the step is no longer this message's (cancelled, timed out)
        sent: Retry = self.wrapper.retry(exc=exc, countdown=countdown, max_retries=None,
                                         throw=throw)
        return sent

    def defer(self, countdown: float, reason: BaseException | None) -> Retry:
        if not self._give_back(f"deferred: {describe(reason)}" if reason else "deferred"):
            raise Ignore()
        return defer(self.wrapper, countdown, reason)


class StepRecorder(Middleware):
    """Records the step's end in its run (one per execution; see the module doc)."""

    records_outcome = True

    def __init__(self, finish: Callable[..., dict[str, Any]]) -> None:
        self.finish = finish
        #: what the run made of the step's end (the wrapper's result)
        self.answer: dict[str, Any] | None = None

    def after_success(self, ctx: TaskContext) -> None:
        self.answer = self.finish(StepState.SUCCEEDED, result=ctx.result)
        ctx.acted = True  # dependents may be dispatched: a requeue would repeat nothing

    def on_exhausted(self, ctx: TaskContext) -> None:
        assert ctx.exc is not None
        self.answer = self.finish(StepState.FAILED, error=describe(ctx.exc))
        ctx.acted = True
