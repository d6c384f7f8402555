"""The event-driven workflow engine: one Celery task per step, no worker ever waits.

Every step runs as the wrapper task ``taskworks.workflow_step(run_id, step, token)``:

1. ``start``: QUEUED -> RUNNING if the message holds the step's current token
   (otherwise it is stale or the step was cancelled: acknowledge and do nothing);
2. build the step's input ``{"input", "params", "results"}`` from the store, evaluate
   its condition, call the registered step task's body in-process (``task.run``);
3. ``finish``: one transaction records the outcome and claims the dependents that
   became ready (runs.py explains why each is claimed exactly once);
4. after commit, publish the claimed steps and mark them dispatched.

A failure is retried by re-publishing the same message (``self.retry``) with the
step's RetryPolicy; executions are counted in the store (``tries``), so a step that
kills its worker every time fails after ``max_retries + 1`` deliveries. The sweep
(``taskworks.workflows.sweep``, every 30 s from beat, or ``taskworks workflow recover``)
republishes steps whose publisher died between commit and publish, fails runs past
their deadline and steps past their hard time limit.

The engine receives what it uses (the composition root, taskworks/app.py, passes them
through ``Workflows``): the stores, the Celery app (its tasks, producer and control),
the task runtime and retry policies, the routing function, a bulk publish function
(``tw.submit_many``) and the workers' default hard time limit.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, Protocol

from celery import Celery

from taskworks.errors import InvalidInput, RedeliveryLimitExceeded
from taskworks.logs import get_logger
from taskworks.runtime.dlq import DeadLetterMiddleware
from taskworks.runtime.middleware import (
    INFRASTRUCTURE_ERRORS,
    Runtime,
    TaskContext,
    requeue_message,
)
from taskworks.runtime.retry import RetryPolicies, RetryPolicy
from taskworks.workflows.cache import DEFINITIONS_MAX_BYTES, SizedLRU, keep
from taskworks.workflows.conditions import Predicates, evaluate
from taskworks.workflows.definitions import DefinitionStore
from taskworks.workflows.model import SkipReason, StepState, Workflow
from taskworks.workflows.recovery import RunRecovery
from taskworks.workflows.runs import Dispatch, Outcome, RunStore
from taskworks.workflows.sql import now
from taskworks.workflows.step_runtime import StepHandle, StepRecorder, describe

__all__ = [
    "DISPATCH_GRACE", "STEP_TASK", "SWEEP_TASK", "TIME_LIMIT_GRACE", "PublishMany",
    "WorkflowEngine",
]

log = get_logger("taskworks.workflows")

STEP_TASK = "taskworks.workflow_step"
SWEEP_TASK = "taskworks.workflows.sweep"
#: a QUEUED step not marked dispatched after this long lost its publisher
DISPATCH_GRACE = 30.0
#: messages per pipelined round trip when publishing claimed steps
PUBLISH_BATCH = 200
#: a RUNNING step this long past its hard time limit was killed without a word
TIME_LIMIT_GRACE = 30.0
#: entries kept by each of the process's caches of runs and definitions (a map-reduce
#: job registers a definition of its own, so they would grow without one); definitions
#: are bounded by their size too (DEFINITIONS_MAX_BYTES)
CACHE_BOUND = 10_000


class PublishMany(Protocol):
    """Sends many calls of one task, pipelined (``Taskworks.submit_many``)."""

    def __call__(self, name: str, items: Iterable[Any], *, queue: str | None = None,
                 priority: int | None = None, batch_size: int = 1000) -> list[str]: ...


class WorkflowEngine:
    def __init__(self, runs: RunStore, definitions: DefinitionStore, recovery: RunRecovery,
                 *, app: Celery, runtime: Runtime, retry_policies: RetryPolicies,
                 route_of: Callable[[str], str], publish_many: PublishMany,
                 default_time_limit: float) -> None:
        self.runs = runs
        self.definitions = definitions
        self.recovery = recovery
        self.app = app
        self.runtime = runtime
        self.retry_policies = retry_policies
        self.route_of = route_of
        self.publish_many = publish_many
        #: seconds a step without its own ``timeout`` may run (the workers' hard limit)
        self.default_time_limit = default_time_limit
        self.predicates = Predicates()
        #: definitions registered in this process (they keep Python-only details such
        #: as a RetryPolicy's exception classes); others come from the store. An LRU: the
        #: definitions in use stay while map-reduce jobs' pass through
        self.registered: SizedLRU[tuple[str, int], Workflow] = SizedLRU(
            CACHE_BOUND, DEFINITIONS_MAX_BYTES)
        #: run id -> (workflow, version): what publishing needs to read a step's options
        self._run_workflows: dict[str, tuple[str, int]] = {}

    def definition(self, name: str, version: int) -> Workflow:
        return self.registered.get((name, version)) or self.definitions.definition(name,
                                                                                  version)

    # -- publishing ----------------------------------------------------------------
    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        """Send the claimed steps (after the claiming transaction committed)."""
        if not dispatches:
            return
        task = self.app.tasks[STEP_TASK]
        sent: list[Dispatch] = []
        # steps with their own time limits need per-message options (apply_async); the
        # others go out pipelined, grouped by queue and priority (a wide fan-out is a
        # few round trips, not one per step)
        grouped: dict[tuple[str, int | None], list[Dispatch]] = defaultdict(list)
        limited: list[tuple[Dispatch, dict[str, Any]]] = []
        for d in dispatches:
            options = self._options(d)
            if "soft_time_limit" in options or "time_limit" in options:
                limited.append((d, options))
            else:
                grouped[(options["queue"], options.get("priority"))].append(d)
        try:
            for (queue, priority), group in grouped.items():
                self.publish_many(STEP_TASK, [[d.run_id, d.name, d.token] for d in group],
                                  queue=queue, priority=priority, batch_size=PUBLISH_BATCH)
                sent += group
            if limited:
                with self.app.producer_or_acquire() as producer, \
                        producer.batch(max_size=PUBLISH_BATCH):
                    for d, options in limited:
                        task.apply_async(args=[d.run_id, d.name, d.token],
                                         task_id=d.task_id, producer=producer, **options)
                        sent.append(d)
        except Exception:
            # a failed batch may have dropped messages it had accepted: mark none of them;
            # the sweep republishes them with new tokens, and any that did go out are inert
            log.exception("workflow step publish failed", steps=len(dispatches))
            sent = []
        self.runs.mark_dispatched(sent)

    def _options(self, d: Dispatch) -> dict[str, Any]:
        wf = self._run_definition(d.run_id)
        step = wf.step(d.name)
        task = self.app.tasks.get(step.task)
        options: dict[str, Any] = {
            "queue": step.queue or self.route_of(step.task),
        }
        priority = step.priority if step.priority is not None else getattr(task, "priority", None)
        if priority is not None:
            options["priority"] = priority
        if step.soft_timeout is not None:
            options["soft_time_limit"] = step.soft_timeout
        if step.timeout is not None:
            options["time_limit"] = step.timeout
        return options

    def _run_definition(self, run_id: str) -> Workflow:
        if run_id not in self._run_workflows:
            name, version, _ = self.runs.run_info(run_id)
            keep(self._run_workflows, run_id, (name, version), CACHE_BOUND)
        return self.definition(*self._run_workflows[run_id])

    def act(self, outcome: Outcome, *, terminate: bool = False) -> Outcome:
        """Publish what a transaction claimed and revoke what it stopped."""
        self.publish(outcome.dispatch)
        if outcome.revoke:
            try:
                self.app.control.revoke(outcome.revoke, terminate=terminate)
            except Exception:
                log.exception("revoke failed", tasks=len(outcome.revoke))
        return outcome

    # -- running a step (inside the wrapper task) ----------------------------------
    def execute(self, wrapper: Any, run_id: str, name: str, token: str) -> dict[str, Any]:
        """Run one step message: take the step, then its task's chain around its body."""
        request = wrapper.request
        ignored = {"run": run_id, "step": name, "state": "ignored"}
        try:
            try:
                workflow, version, run_input = self.runs.run_info(run_id)
                wf = self.definition(workflow, version)
                step = wf.step(name)
            except (InvalidInput, KeyError):
                log.warning("workflow step message for an unknown run or step", run=run_id,
                            step=name)
                return ignored  # a stray message (its run deleted): nothing to run
            keep(self._run_workflows, run_id, (workflow, version), CACHE_BOUND)
            # a redelivery (its worker died), or a message requeued because the store was
            # down, finds its step RUNNING under its own token: it takes it again; so
            # does a retry of the wrapper sent before this release
            retaken = bool((request.delivery_info or {}).get("redelivered")) \
                or bool(request.retries)
            started = self.runs.start_step(run_id, name, token, redelivered=retaken,
                                           celery_id=request.id, depends_on=step.depends_on)
        except INFRASTRUCTURE_ERRORS as exc:  # the store is down: come back, lose nothing
            log.warning("workflow step could not start; message requeued", run=run_id,
                        step=name, error=describe(exc))
            raise requeue_message(exc) from exc
        if started is None:
            return ignored

        def finish(state: StepState, **kw: Any) -> dict[str, Any]:
            outcome = self.act(self.runs.finish_step(wf, run_id, name, token, state, **kw))
            return {"run": run_id, "step": name, "state": state.value,
                    "applied": outcome.applied}

        deps = started.dependencies
        for dep in () if step.run_if_failed else step.depends_on:
            state, reason, _ = deps[dep]
            if state == StepState.FAILED.value or reason == SkipReason.UPSTREAM_FAILED.value:
                return finish(StepState.SKIPPED, skip_reason=SkipReason.UPSTREAM_FAILED)
            if state == StepState.SKIPPED.value and not step.run_if_skipped:
                return finish(StepState.SKIPPED, skip_reason=SkipReason.UPSTREAM_SKIPPED)
        # a join over failures sees only the dependencies that succeeded
        shown = [dep for dep in step.depends_on if not step.run_if_failed
                 or deps[dep][0] == StepState.SUCCEEDED.value]
        document = {"input": run_input, "params": dict(step.params),
                    "results": {dep: deps[dep][2] for dep in shown}}
        condition_error: Exception | None = None
        try:
            if step.when is not None and not evaluate(step.when, document, self.predicates):
                return finish(StepState.SKIPPED, skip_reason=SkipReason.CONDITION)
        except Exception as exc:  # a condition that cannot be evaluated fails the step
            condition_error = exc
        return self._run_step(wrapper, wf, run_id, name, token, started.tries,
                              {"input": run_input, "results": document["results"],
                               **step.params}, condition_error, finish)

    def _run_step(self, wrapper: Any, wf: Workflow, run_id: str, name: str, token: str,
                  tries: int, kwargs: dict[str, Any], condition_error: Exception | None,
                  finish: Any) -> dict[str, Any]:
        step = wf.step(name)
        task = self.app.tasks.get(step.task)
        options = dict(getattr(task, "taskworks_options", {}) or {})
        policy = step.retries or self._task_policy(step.task, task)
        options["retry_policy"] = policy

        def body() -> Any:
            if condition_error is not None:
                raise condition_error
            if tries > policy.max_retries + 1:
                raise RedeliveryLimitExceeded(
                    f"step {name!r} of run {run_id} was delivered {tries} times (its "
                    f"worker died each time); max_retries is {policy.max_retries}")
            if task is None:
                raise LookupError(f"task {step.task!r} is not registered in this worker")
            result = task.run(**kwargs)
            json.dumps(result)  # the result goes to a JSON column and to dependents
            return result

        handle = StepHandle(
            wrapper,
            requeue=lambda error: self.runs.requeue(run_id, name, token, error),
            give_back=lambda reason: self.runs.defer(run_id, name, token, reason))
        recorder = StepRecorder(finish)
        request = wrapper.request
        ctx = TaskContext(
            task=handle, task_id=request.id or "", name=step.task,
            queue=(request.delivery_info or {}).get("routing_key"), args=(), kwargs=kwargs,
            attempt=tries, options=options, hostname=request.hostname)
        runtime = self.runtime
        runtime.run(ctx, body, runtime.with_inserted(recorder, after=DeadLetterMiddleware))
        return recorder.answer or {"run": run_id, "step": name, "state": "ignored"}

    def _task_policy(self, name: str, task: Any) -> RetryPolicy:
        options = getattr(task, "taskworks_options", {}) or {}
        return self.retry_policies.for_task(name, options)

    # -- recovery ------------------------------------------------------------------
    def sweep(self, grace: float = DISPATCH_GRACE,
              time_limit_grace: float = TIME_LIMIT_GRACE) -> dict[str, int]:
        """Republish lost dispatches, fail runs past their deadline and steps killed by
        their hard time limit. Safe to run anywhere, any number of times."""
        republished = 0
        for stale in self.recovery.undispatched(grace):
            fresh = self.recovery.renew(stale)
            if fresh is not None:
                self.publish([fresh])
                republished += 1
        timed_out = 0
        for run_id in self.recovery.expired_runs():
            if self.act(self.runs.time_out(run_id), terminate=True).applied:
                timed_out += 1
        overdue = 0
        default_limit = self.default_time_limit
        for run_id, workflow, name, token, version, started_at in self.recovery.overdue_steps(
                now() - timedelta(seconds=time_limit_grace)):
            step = self.definition(workflow, version).step(name)
            limit = step.timeout if step.timeout is not None else default_limit
            if started_at + timedelta(seconds=limit + time_limit_grace) < now():
                wf = self.definition(workflow, version)
                outcome = self.runs.finish_step(
                    wf, run_id, name, token, StepState.FAILED,
                    error=f"no completion within its time limit of {limit}s (killed by the "
                          "limit, or its worker died and the message was not redelivered)")
                overdue += int(self.act(outcome).applied)
        if republished or timed_out or overdue:
            log.info("workflow sweep", republished=republished, timed_out=timed_out,
                     overdue=overdue)
        return {"republished": republished, "timed_out": timed_out, "overdue": overdue}
