"""The Runtime itself: hook order, what a failing hook may and may not change, where
``add`` puts a middleware. Tasks are a real Celery app's; the middlewares are test
middlewares written against the public protocol, as a user's would be."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery import Celery
from celery.exceptions import Reject

from taskworks.errors import InvalidInput
from taskworks.runtime.middleware import Middleware, Runtime, TaskContext

HOOKS = ("before_task", "after_success", "after_failure", "on_retry", "on_exhausted",
         "on_requeued")

app = Celery("runtime-tests", set_as_current=False)




def _noop() -> None: ...


late_task: Any = app.task(name="runtime_tests.acks_late", acks_late=True, shared=False)(_noop)
early_task: Any = app.task(name="runtime_tests.acks_early", acks_late=False,
                           shared=False)(_noop)


class Recorder(Middleware):
    """Writes each hook it sees into a shared log; may raise from one hook."""

    def __init__(self, name: str, calls: list[str], *, fails_in: str | None = None,
                 error: Exception | None = None) -> None:
        self.name = name
        self.calls = calls
        self.fails_in = fails_in
        self.error = error or RuntimeError(f"{name} broke")

    def _hook(self, hook: str) -> None:
        self.calls.append(f"{self.name}.{hook}")
        if hook == self.fails_in:
            raise self.error

    def before_task(self, ctx: TaskContext) -> None:
        self._hook("before_task")

    def after_success(self, ctx: TaskContext) -> None:
        self._hook("after_success")

    def after_failure(self, ctx: TaskContext) -> None:
        self._hook("after_failure")

    def on_exhausted(self, ctx: TaskContext) -> None:
        self._hook("on_exhausted")

    def on_requeued(self, ctx: TaskContext) -> None:
        self._hook("on_requeued")


class OutcomeRecorder(Recorder):
    """A recorder of the outcome, as the journal's barrier and the dead letters are."""

    records_outcome = True


class Answers(Middleware):
    """Answers for the body in before_task (as the idempotency middleware does)."""

    def before_task(self, ctx: TaskContext) -> None:
        ctx.result, ctx.answered = "stored", True


class Last(Middleware):
    last = True


def context(task: Any = late_task) -> TaskContext:
    return TaskContext(task=task, task_id="t-1", name=task.name, queue="default", args=(),
                       kwargs={}, attempt=1, options={}, hostname="test")


def body_returning(value: Any, calls: list[str]) -> Callable[[], Any]:
    def body() -> Any:
        calls.append("body")
        return value
    return body


def failing_body(calls: list[str]) -> Callable[[], Any]:
    def body() -> Any:
        calls.append("body")
        raise ValueError("the task's own error")
    return body


def test_success_runs_before_hooks_in_order_then_after_success_in_order() -> None:
    calls: list[str] = []
    runtime = Runtime([Recorder("a", calls), Recorder("b", calls)], requeue_delay=0)
    assert runtime.run(context(), body_returning(42, calls)) == 42
    assert calls == ["a.before_task", "b.before_task", "body", "a.after_success",
                     "b.after_success"]


def test_failure_decides_then_records_exhaustion_and_raises_the_tasks_error() -> None:
    calls: list[str] = []
    ctx = context()
    runtime = Runtime([Recorder("a", calls), Recorder("b", calls)], requeue_delay=0)
    with pytest.raises(ValueError, match="the task's own error"):
        runtime.run(ctx, failing_body(calls))
    assert calls == ["a.before_task", "b.before_task", "body", "a.after_failure",
                     "b.after_failure", "a.on_exhausted", "b.on_exhausted"]
    assert ctx.exhausted_reason == "failed"
    assert "ValueError" in (ctx.traceback or "")


def test_a_failing_hook_never_hides_the_outcome() -> None:
    calls: list[str] = []
    runtime = Runtime([Recorder("a", calls, fails_in="after_success"), Recorder("b", calls)],
                      requeue_delay=0)
    assert runtime.run(context(), body_returning("ok", calls)) == "ok"
    assert "b.after_success" in calls  # the hooks after the broken one still ran

    calls.clear()
    runtime = Runtime([Recorder("a", calls, fails_in="after_failure"),
                       Recorder("b", calls, fails_in="on_exhausted")], requeue_delay=0)
    with pytest.raises(ValueError, match="the task's own error"):  # not RuntimeError
        runtime.run(context(), failing_body(calls))
    assert calls[-2:] == ["a.on_exhausted", "b.on_exhausted"]


def test_a_before_task_refusal_is_the_failure_and_the_body_never_runs() -> None:
    calls: list[str] = []
    runtime = Runtime([Recorder("a", calls, fails_in="before_task"), Recorder("b", calls)],
                      requeue_delay=0)
    with pytest.raises(RuntimeError, match="a broke"):
        runtime.run(context(), body_returning(1, calls))
    assert "body" not in calls
    assert "b.before_task" not in calls
    assert calls[-2:] == ["a.on_exhausted", "b.on_exhausted"]


def test_an_answer_skips_the_body_and_the_later_before_hooks() -> None:
    calls: list[str] = []
    runtime = Runtime([Recorder("a", calls), Answers(), Recorder("b", calls)],
                      requeue_delay=0)
    assert runtime.run(context(), body_returning("fresh", calls)) == "stored"
    assert calls == ["a.before_task", "a.after_success", "b.after_success"]


def test_a_recorder_that_meets_the_store_down_requeues_instead_of_acknowledging() -> None:
    calls: list[str] = []
    down = redis.ConnectionError("broker down")
    runtime = Runtime([Recorder("a", calls),
                       OutcomeRecorder("journal", calls, fails_in="after_success",
                                       error=down)], requeue_delay=0)
    with pytest.raises(Reject) as caught:
        runtime.run(context(), body_returning(1, calls))
    assert caught.value.requeue is True
    assert calls[-2:] == ["a.on_requeued", "journal.on_requeued"]


def test_a_recorder_error_that_is_not_infrastructure_is_only_logged() -> None:
    calls: list[str] = []
    runtime = Runtime([OutcomeRecorder("journal", calls, fails_in="after_success")],
                      requeue_delay=0)
    assert runtime.run(context(), body_returning(1, calls)) == 1  # a bug: not a requeue


def test_without_acks_late_an_unrecorded_outcome_cannot_be_requeued() -> None:
    calls: list[str] = []
    runtime = Runtime([OutcomeRecorder("journal", calls, fails_in="after_success",
                                       error=redis.ConnectionError("down"))],
                      requeue_delay=0)
    assert runtime.run(context(early_task), body_returning(1, calls)) == 1
    assert "journal.on_requeued" not in calls  # already acknowledged: logged as lost


def test_add_places_a_middleware_and_keeps_the_last_one_last() -> None:
    calls: list[str] = []
    first, second, barrier = Recorder("a", calls), Answers(), Last()
    runtime = Runtime([first, second, barrier])
    added = Recorder("end", calls)
    runtime.add(added)
    assert runtime.middlewares == [first, second, added, barrier]
    early = Recorder("early", calls)
    runtime.add(early, before=Answers)
    assert runtime.middlewares == [first, early, second, added, barrier]
    late = Recorder("late", calls)
    runtime.add(late, after=Answers)
    assert runtime.middlewares == [first, early, second, late, added, barrier]
    with pytest.raises(InvalidInput, match="Recorder, Recorder, Answers"):
        runtime.add(Recorder("x", calls), before=Runtime)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="not both"):
        runtime.add(Recorder("x", calls), before=Answers, after=Answers)
