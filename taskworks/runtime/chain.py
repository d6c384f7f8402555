"""The default middleware chain, in the order its hooks must run.

Retry decides first (after_failure sets retry_in or exhausted_reason), severity then
classifies and runs callbacks, so that the journal, the dead-letter store and the
notifier all see the final decision and severity.
"""

from __future__ import annotations

from taskworks.notify.middleware import NotifyMiddleware, SendNotice
from taskworks.resilience.breaker_middleware import BreakerMiddleware
from taskworks.resilience.breaker_registry import Breakers
from taskworks.resilience.idempotency import IdempotencyMiddleware
from taskworks.resilience.ratelimit import RateLimitMiddleware
from taskworks.runtime.dlq import DeadLetterMiddleware, DeadLetterStore
from taskworks.runtime.journal import (
    JournalBarrier,
    JournalMiddleware,
    JournalWriter,
    OutcomeGuard,
)
from taskworks.runtime.middleware import Middleware, Runtime
from taskworks.runtime.recycling import SoloRecycling
from taskworks.runtime.retry import RetryMiddleware, RetryPolicies, RetryPolicy
from taskworks.runtime.severity import SeverityMiddleware, SeverityRules, default_callbacks
from taskworks.settings import RetrySettings, Settings
from taskworks.store.engine import Store

__all__ = ["default_policy", "default_runtime"]


def default_policy(r: RetrySettings) -> RetryPolicy:
    """The retry policy of tasks without one of their own (settings ``[retry]``)."""
    return RetryPolicy(max_retries=r.max_retries, base_delay=r.base_delay,
                       backoff_factor=r.backoff_factor,
                       max_delay=max(r.max_delay, r.base_delay), jitter=r.jitter)


def default_runtime(settings: Settings, store: Store, send_notice: SendNotice,
                    extra: list[Middleware] | None = None,
                    solo: SoloRecycling | None = None) -> Runtime:
    """The chain every task runs through: journal and dead letters in ``store``, failure
    notices published with ``send_notice``, a solo worker recycled after a MemoryError
    through ``solo``, the rest as ``settings`` say."""
    middlewares: list[Middleware] = [
        RetryMiddleware(RetryPolicies(default_policy(settings.retry)),
                        settings.effective_broker_url, settings.retry.budget_per_minute),
        SeverityMiddleware(SeverityRules(), default_callbacks(store, solo)),
    ]
    # the dead letter before the journal row: a worker killed between the two leaves a
    # letter without its row, which the outcome guard writes when the message comes back
    middlewares.append(DeadLetterMiddleware(DeadLetterStore(store)))
    journal: JournalMiddleware | None = None
    if settings.journal.enabled:
        writer = JournalWriter(store, settings.journal.batch_size,
                               settings.journal.flush_interval,
                               group_commit_delay=settings.journal.group_commit_ms / 1000)
        journal = JournalMiddleware(writer, settings.journal)
        middlewares.append(journal)
        # first of all: a redelivered or retried task that already has an outcome stops
        middlewares.insert(0, OutcomeGuard(journal))
    middlewares.append(NotifyMiddleware(settings.notify, send_notice))
    # an open breaker defers first, spending no rate token; a probe it admitted is given
    # back (on_deferred) if the rate limit or idempotency then defers the task
    middlewares.append(BreakerMiddleware(Breakers(settings.effective_broker_url,
                                                  settings.breaker)))
    # last, rate limit before idempotency: a deferral (over the limit) must come before
    # a lease is taken, and nothing after idempotency may refuse a run it leased
    middlewares.append(RateLimitMiddleware(settings.effective_broker_url,
                                           horizon=min(60.0, settings.visibility_timeout / 4)))
    idem = settings.idempotency
    middlewares.append(IdempotencyMiddleware(
        settings.effective_broker_url, ttl_seconds=idem.ttl_seconds,
        lease_seconds=idem.lease_seconds, wait_interval=idem.wait_interval,
        max_hold=settings.worker.time_limit))
    if journal is not None and settings.journal.durable:
        # after every hook that acts
        middlewares.append(JournalBarrier(journal,
                                          group_commit=settings.journal.group_commit_ms > 0))
    return Runtime([*middlewares, *(extra or [])])
