"""Retry policies (the patterns guide's RetryPolicy), redelivery counting and a cluster-wide
retry budget.

Which policy applies to a task: the one given as ``@tw.task(retry_policy=...)``, else the
one registered for its name (``tw.retry_policies.register(name, policy)``), else the
default. Attempts count Celery retries *and* redeliveries after a lost worker, so a
message that kills its worker every time ends in the dead-letter store after
``max_retries`` instead of looping forever.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from celery.exceptions import MaxRetriesExceededError

from taskworks import keys
from taskworks.broker.urls import redis_client
from taskworks.errors import InvalidInput, RedeliveryLimitExceeded
from taskworks.logs import get_logger
from taskworks.runtime.middleware import Middleware, TaskContext

__all__ = ["BUDGET_WINDOW_MS", "NEVER_RETRY", "REDELIVERY_TTL", "RetryMiddleware", "RetryPolicies",
           "RetryPolicy"]

log = get_logger("taskworks.retry")

#: programming errors: running the same code again gives the same error
NEVER_RETRY: tuple[type[BaseException], ...] = (
    SyntaxError, ImportError, AttributeError, TypeError,
)


#: the retry budget counts retries over a sliding minute
BUDGET_WINDOW_MS = 60_000
#: how long a task's redelivery count (and a requeue marker) is kept, in seconds
REDELIVERY_TTL = 7 * 24 * 3600


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    base_delay: float = 1.0
    backoff_factor: float = 2.0
    max_delay: float = 300.0
    #: add a random 10-30 % to every delay (the patterns guide's rule), so that retries of many
    #: tasks failing together do not arrive together
    jitter: bool = True
    jitter_range: tuple[float, float] = (0.1, 0.3)
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    never_retry: tuple[type[BaseException], ...] = field(default=NEVER_RETRY)

    def __post_init__(self) -> None:
        checks = [
            ("max_retries", self.max_retries, self.max_retries >= 0, "an integer >= 0"),
            ("base_delay", self.base_delay, self.base_delay >= 0, "seconds >= 0"),
            ("backoff_factor", self.backoff_factor, self.backoff_factor >= 1, "a factor >= 1"),
            ("max_delay", self.max_delay, self.max_delay >= self.base_delay,
             "seconds >= base_delay"),
            ("jitter_range", self.jitter_range,
             0 <= self.jitter_range[0] <= self.jitter_range[1],
             "(low, high) with 0 <= low <= high"),
        ]
        for name, value, ok, expected in checks:
            if not ok:
                raise InvalidInput(f"RetryPolicy.{name}", value, expected)

    def base(self, retries_done: int) -> float:
        """The delay before retry number ``retries_done + 1``, without jitter."""
        try:
            raw = float(self.base_delay * self.backoff_factor ** retries_done)
        except OverflowError:  # factor ** n past a float: far beyond any max_delay
            raw = math.inf
        return float(min(self.max_delay, raw))

    def delay(self, retries_done: int, rng: random.Random | None = None) -> float:
        delay = self.base(retries_done)
        if self.jitter:
            low, high = self.jitter_range
            delay += (rng or random).uniform(low, high) * delay  # not crypto: spreading load
        return min(self.max_delay, delay)

    def retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, self.retry_on) and not isinstance(exc, self.never_retry)


class RetryPolicies:
    """Policies registered by task name (the patterns guide's register_retry_policy)."""

    def __init__(self, default: RetryPolicy | None = None) -> None:
        self.default = default or RetryPolicy()
        self._by_name: dict[str, RetryPolicy] = {}

    def register(self, task_name: str, policy: RetryPolicy) -> None:
        if not isinstance(policy, RetryPolicy):
            raise InvalidInput("policy", policy, "a RetryPolicy")
        self._by_name[task_name] = policy

    def for_task(self, task_name: str, options: Mapping[str, Any]) -> RetryPolicy:
        policy = options.get("retry_policy")
        if isinstance(policy, RetryPolicy):
            return policy
        return self._by_name.get(task_name, self.default)


class RetryMiddleware(Middleware):
    """Decides, after a failure, whether and when a task runs again."""

    options = frozenset({"retry_policy", "retry_budget"})

    def __init__(self, policies: RetryPolicies, broker_url: str,
                 default_budget: int | None = None) -> None:
        self.policies = policies
        self.broker_url = broker_url
        self.default_budget = default_budget
        # made now, not on first use: a threads pool's first tasks would race to make
        # one each, and a dropped client closes its pool under whoever holds it. A
        # forked pool child gets fresh connections (redis-py's pools check the pid)
        self.client = redis_client(broker_url)
        scripts = resources.files("taskworks.runtime")
        self._budget_script = self.client.register_script(
            (scripts / "budget.lua").read_text())
        self._redelivery_script = self.client.register_script(
            (scripts / "redelivery.lua").read_text())

    def validate(self, task_name: str, options: Mapping[str, Any]) -> None:
        policy = options.get("retry_policy")
        if policy is not None and not isinstance(policy, RetryPolicy):
            raise InvalidInput("retry_policy", policy, "a taskworks RetryPolicy")
        budget = options.get("retry_budget")
        if budget is not None and (not isinstance(budget, int) or budget < 0):
            raise InvalidInput("retry_budget", budget, "retries per minute, an integer >= 0")

    def before_task(self, ctx: TaskContext) -> None:
        if not ctx.redelivered:
            return  # the common case costs no round trip
        # kombu marks a message restored after its worker died; count those runs too
        redeliveries = int(self._redelivery_script(
            keys=[keys.redeliveries(ctx.task_id), keys.requeued(ctx.task_id)],
            args=[REDELIVERY_TTL]))
        ctx.attempt += redeliveries
        max_retries = self._max_retries(ctx)
        if max_retries is not None and ctx.attempt > max_retries + 1:
            raise RedeliveryLimitExceeded(
                f"{ctx.name}[{ctx.task_id}] was delivered {ctx.attempt} times "
                f"({redeliveries} after a lost worker); max_retries is {max_retries}"
            )

    @staticmethod
    def celery_decides(ctx: TaskContext) -> bool:
        """A task of an adopted Celery app keeps Celery's own retry options
        (``autoretry_for``, ``max_retries``, ``self.retry``) unless it names a policy."""
        return bool(getattr(ctx.task, "taskworks_adopted", False)) \
            and "retry_policy" not in ctx.options

    def _max_retries(self, ctx: TaskContext) -> int | None:
        if self.celery_decides(ctx):
            limit = getattr(ctx.task, "max_retries", None)
            return limit if isinstance(limit, int) else None
        return self.policies.for_task(ctx.name, ctx.options).max_retries

    def on_requeued(self, ctx: TaskContext) -> None:
        # the redelivery that follows is taskworks' own requeue, not a lost worker's
        self.client.set(keys.requeued(ctx.task_id), 1, ex=REDELIVERY_TTL)

    def after_failure(self, ctx: TaskContext) -> None:
        assert ctx.exc is not None
        if self.celery_decides(ctx):
            self._celery_outcome(ctx)
            return
        policy = self.policies.for_task(ctx.name, ctx.options)
        if isinstance(ctx.exc, RedeliveryLimitExceeded):
            ctx.exhausted_reason = "redelivery_limit"
        elif not policy.retryable(ctx.exc):
            ctx.exhausted_reason = "not_retryable"
        elif ctx.attempt > policy.max_retries:
            ctx.exhausted_reason = "max_retries"
        elif not self._within_budget(ctx):
            ctx.exhausted_reason = "retry_budget"
        else:
            ctx.retry_in = policy.delay(ctx.attempt - 1)
            # a server that said when to come back (HTTP Retry-After, a breaker's
            # retry_after) is believed, within the policy's max_delay
            hint = getattr(ctx.exc, "retry_after", None)
            if isinstance(hint, int | float) and not isinstance(hint, bool) and hint > 0:
                ctx.retry_in = max(ctx.retry_in, min(float(hint), policy.max_delay))

    @staticmethod
    def _celery_outcome(ctx: TaskContext) -> None:
        """An exception out of a Celery-retried body is final: Celery's ``retry`` raised
        Retry for every retry it sent, and the exception itself once they were spent."""
        task, exc = ctx.task, ctx.exc
        limit = getattr(task, "max_retries", None)
        retries = task.request.retries or 0
        if isinstance(exc, RedeliveryLimitExceeded):
            ctx.exhausted_reason = "redelivery_limit"
        elif isinstance(exc, MaxRetriesExceededError) or (
                isinstance(limit, int) and retries >= limit
                and isinstance(exc, tuple(getattr(task, "autoretry_for", ()) or ()))):
            ctx.exhausted_reason = "max_retries"
        else:
            ctx.exhausted_reason = "failed"

    def _within_budget(self, ctx: TaskContext) -> bool:
        budget = ctx.options.get("retry_budget", self.default_budget)
        if budget is None:
            return True
        admitted = bool(self._budget_script(
            keys=[keys.retry_budget(ctx.name)],
            args=[f"{ctx.task_id}:{ctx.attempt}", budget, BUDGET_WINDOW_MS],
        ))
        if not admitted:
            log.warning("retry budget exhausted", task=ctx.name, budget_per_minute=budget)
        return admitted
