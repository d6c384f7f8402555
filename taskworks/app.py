"""The ``Taskworks`` facade: a Celery app configured from settings, or an existing one adopted."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, overload

from celery import Celery, Task
from celery.result import AsyncResult
from kombu import Queue

from taskworks import bulk, signals, topology
from taskworks.broker import results
from taskworks.broker.strategy import STRATEGY
from taskworks.broker.urls import redis_client
from taskworks.errors import InvalidInput
from taskworks.mapreduce.jobs import Jobs
from taskworks.notify.task import NOTIFY_TASK
from taskworks.redaction import Redactor
from taskworks.resilience.breaker_registry import Breakers
from taskworks.resilience.ratelimit import RateLimits
from taskworks.runtime.chain import default_runtime
from taskworks.runtime.dlq import DeadLetterStore, Resend
from taskworks.runtime.journal import JournalMiddleware
from taskworks.runtime.middleware import Middleware, Runtime
from taskworks.runtime.progress import TaskSnapshot, read_progress
from taskworks.runtime.recycling import SoloRecycling
from taskworks.runtime.retry import RetryPolicies
from taskworks.runtime.severity import ErrorCallback, SeverityMiddleware, SeverityRules
from taskworks.scheduling import publishing
from taskworks.scheduling.delayed import ScheduledTasks
from taskworks.settings import Settings, load_settings
from taskworks.store.engine import Store
from taskworks.tasks import builtin
from taskworks.workflows.api import Workflows

__all__ = ["CELERY_OPTIONS", "Taskworks", "TaskworksTask"]

#: Celery options ``@tw.task`` passes through; middlewares add their own options.
#: ``rate_limit`` is deliberately NOT here: it is taskworks' cluster-wide limit
#: (resilience/ratelimit.py); Celery's per-worker attribute of the same name stays unset.
CELERY_OPTIONS = frozenset({
    "name", "queue", "priority", "soft_time_limit", "time_limit", "bind",
    "ignore_result", "acks_late",
    # taskworks' own attribute of the task class: a deadline to start, from its due time
    "start_within",
})


class TaskworksTask(Task):  # type: ignore[misc]
    """Base class of every taskworks task: owns the priority scale at the broker boundary."""

    #: Celery's, with a requeue the broker refuses logged instead of stopping the worker
    Strategy = STRATEGY
    #: the default urgency (0-9, 9 most urgent) when neither task nor caller sets one
    default_priority = 5
    #: retry limits are the retry policy's business (runtime/retry.py), not Celery's
    max_retries = None
    #: the middleware chain; None for tasks declared outside taskworks
    runtime: Runtime | None = None
    #: this task's middleware options, as declared
    taskworks_options: dict[str, Any] = {}
    #: seconds after its due time by which a call must have started, or it is not run
    #: (journaled ``expired``); None: no deadline unless the caller gives ``expires``
    start_within: float | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:
            return super().__call__(*args, **kwargs)  # a plain function call
        if self.runtime is None:  # opted out, or runs the chain itself (workflow steps)
            return self.run(*args, **kwargs)
        return self.runtime.execute(self, args, kwargs, self.run)

    def apply_async(
        self, args: Any = None, kwargs: Any = None, task_id: str | None = None,
        producer: Any = None, link: Any = None, link_error: Any = None, shadow: Any = None,
        **options: Any,
    ) -> AsyncResult:
        priority = options.get("priority")
        if priority is None:
            priority = self.priority if self.priority is not None else self.default_priority
        options["priority"] = topology.broker_priority(priority)
        now = datetime.now(UTC)
        deadline = publishing.apply_deadline(options, self.start_within, now)
        result: AsyncResult = super().apply_async(
            args, kwargs, task_id, producer, link, link_error, shadow, **options
        )
        due = publishing.due_time(options, now)
        # a retry or deferral re-publishes with ``retries`` and has its own journal row
        if due is not None and due > now and "retries" not in options \
                and self.runtime is not None:
            self._journal_scheduled(result.id, args, kwargs, options, due, deadline)
        return result

    def _journal_scheduled(self, task_id: str, args: Any, kwargs: Any,
                           options: dict[str, Any], due: datetime,
                           deadline: datetime | None) -> None:
        assert self.runtime is not None
        queue = options.get("queue")
        if queue is None:
            with contextlib.suppress(Exception):  # the routers decide; only shown
                queue = self.app.amqp.router.route({}, self.name, args, kwargs)["queue"].name
        publishing.journal_scheduled(self.runtime, self, task_id, getattr(queue, "name", queue),
                                     args, kwargs, due, deadline)

    def signature_from_request(self, request: Any = None, args: Any = None, kwargs: Any = None,
                               queue: Any = None, **extra_options: Any) -> Any:
        # a retry re-publishes with the priority read off the message (broker scale):
        # turn it back into the caller's scale, apply_async converts it once again
        sig = super().signature_from_request(request, args, kwargs, queue, **extra_options)
        raw = sig.options.get("priority")
        if isinstance(raw, int):
            sig.options["priority"] = topology.user_priority(raw)
        return sig


class Taskworks:
    """taskworks on a Celery app.

    ``Taskworks()`` builds and configures a Celery app from settings.
    ``Taskworks(app=existing)`` adopts an existing app: its configuration and tasks are
    left as they are; taskworks adds its queues (only those the app lacks), its built-in
    tasks and its signal handlers.
    """

    def __init__(self, app: Celery | None = None, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.adopted = app is not None
        if app is None:
            app = Celery("taskworks", task_cls=TaskworksTask, set_as_current=False)
            app.conf.update(topology.celery_config(self.settings))
            results.use_for(app)  # one round trip per result (broker/results.py)
        else:
            self._add_missing_queues(app)
        self.app: Celery = app
        self.store = Store(self.settings.effective_database_url,
                           busy_timeout_ms=int(self.settings.sqlite_busy_timeout * 1000))
        worker = self.settings.worker
        # only where a supervisor starts the next process (runtime/recycling.py)
        recycling = SoloRecycling(worker.solo_max_tasks, worker.max_memory_per_child) \
            if worker.solo_recycling else None
        self.runtime = default_runtime(
            self.settings, self.store,
            send_notice=lambda notice: str(self.submit(NOTIFY_TASK, [notice]).id),
            solo=recycling)
        self.dead_letters = DeadLetterStore(self.store, Resend(
            submit=self.submit, queue_names=self.queue_names,
            resume_run=lambda task_id: self.workflows.resume_for_task(task_id)))
        #: durable DAG workflows: ``tw.workflows.register(wf)``, ``.start(name, input)``
        self.workflows = Workflows(
            self.store, self.app, runtime=self.runtime, retry_policies=self.retry_policies,
            route_of=self.route_of, queue_names=self.queue_names,
            publish_many=self.submit_many,
            visibility_timeout=self.settings.visibility_timeout,
            default_time_limit=float(self.settings.worker.time_limit))
        #: map-reduce jobs: ``tw.jobs.start(dataset, function, params, partition_size)``
        self.jobs = Jobs(self.store, self.workflows, self.task, self.queue_names)
        #: delayed tasks in the durable schedule: ``tw.scheduled.list()``, ``.cancel(id)``
        #: delayed tasks the durable schedule keeps until due: ``tw.scheduled.list()``,
        #: ``.show(id)``, ``.cancel(id)``, ``.summary()``
        self.scheduled = ScheduledTasks(
            redis_client(self.settings.effective_broker_url),
            mark_revoked=lambda task_id, reason: self.app.backend.mark_as_revoked(
                task_id, reason),
            journal=self.runtime.get(JournalMiddleware).writer
            if self.settings.journal.enabled else None,
            redact=Redactor(self.settings.journal.redact_keys))
        signals.connect(self.app, self.runtime, self.store, recycling=recycling)
        builtin.register(self.task, app=self.app, store=self.store, settings=self.settings,
                         policies=self.retry_policies, breakers=self.breakers,
                         workflows=self.workflows)

    def _add_missing_queues(self, app: Celery) -> None:
        existing = {q.name for q in (app.conf.task_queues or ())}
        missing = [q for q in topology.queues(self.settings) if q.name not in existing]
        if not existing:
            # Celery's implicit default queue must stay served once we declare queues
            missing.insert(0, Queue(app.conf.task_default_queue))
        app.conf.task_queues = [*(app.conf.task_queues or ()), *missing]

    # -- declaring tasks ------------------------------------------------------------
    @overload
    def task(self, fn: Callable[..., Any], /) -> Any: ...
    @overload
    def task(self, /, **options: Any) -> Callable[[Callable[..., Any]], Any]: ...

    def task(self, fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
        """Declare a task: ``@tw.task`` or ``@tw.task(queue=..., priority=..., ...)``.

        Without ``queue`` the glob routes decide, then the default queue. An unknown
        option or queue is an error here, at declaration, not when the task runs.
        """
        accepted = CELERY_OPTIONS | self.runtime.option_names()
        unknown = set(options) - accepted
        if unknown:
            raise InvalidInput(
                "task option", sorted(unknown)[0], f"one of {', '.join(sorted(accepted))}"
            )
        queue = options.get("queue")
        if queue is not None and queue not in self.settings.queues:
            raise InvalidInput("queue", queue, f"one of {', '.join(self.settings.queues)}")
        if "priority" in options:
            topology.broker_priority(options["priority"])  # validates the range
        if options.get("start_within") is not None:
            options["start_within"] = publishing.check_start_within(options["start_within"])
        celery_options = {k: v for k, v in options.items() if k in CELERY_OPTIONS}
        ours = {k: v for k, v in options.items() if k not in CELERY_OPTIONS}

        def declare(func: Callable[..., Any]) -> Any:
            name = celery_options.get("name") or f"{func.__module__}.{func.__name__}"
            self.runtime.validate(name, ours)
            # shared=False: Celery would otherwise add the task to every app created later
            return self.app.task(
                base=TaskworksTask, default_priority=self.settings.worker.default_priority,
                runtime=self.runtime, taskworks_options=ours, shared=False, **celery_options,
            )(func)

        return declare(fn) if fn is not None else declare

    # -- submitting -----------------------------------------------------------------
    def submit(
        self, name: str, args: Iterable[Any] = (), kwargs: dict[str, Any] | None = None, *,
        queue: str | None = None, priority: int | None = None, countdown: float | None = None,
        eta: datetime | None = None, expires: float | datetime | None = None,
        task_id: str | None = None, headers: dict[str, Any] | None = None,
        dedupe_key: str | None = None, dedupe_ttl: int | None = None,
    ) -> AsyncResult:
        """Send a registered task by name. Priority 0-9, 9 the most urgent.

        ``countdown`` (seconds) or ``eta`` (an aware datetime) delay it: the message waits
        in the durable schedule (broker/schedule.py), not in a worker, however long.
        ``expires`` (seconds from now, or an aware datetime) is its deadline to start:
        taken later, it is not run and is journaled ``expired``.

        With ``dedupe_key``, a second submit with the same key (within ``dedupe_ttl``
        seconds, default ``idempotency.ttl_seconds``) sends nothing and returns the
        result of the task the first one queued (an atomic SET NX in Redis).
        """
        task = self.app.tasks.get(name)
        if task is None:
            raise InvalidInput("task", name, "the name of a registered task")
        if queue is not None and queue not in self.queue_names():
            raise InvalidInput("queue", queue, f"one of {', '.join(self.queue_names())}")
        due, deadline = publishing.checked_times(countdown, eta, expires, datetime.now(UTC))
        options: dict[str, Any] = {}
        if due is not None:
            options["eta"] = due
        if deadline is not None:
            options["expires"] = deadline
        if queue is not None:
            options["queue"] = queue
        if priority is not None:
            options["priority"] = priority
        if task_id is not None:
            options["task_id"] = task_id
        if headers:
            options["headers"] = headers
        args = list(args)
        try:
            if dedupe_key is not None:
                return self._submit_deduped(task, args, kwargs or {}, options,
                                            dedupe_key, dedupe_ttl)
            result: AsyncResult = task.apply_async(args=args, kwargs=kwargs or {}, **options)
        except TypeError as exc:  # Celery checks the call against the task's signature
            raise InvalidInput("args", {"args": args, "kwargs": kwargs or {}},
                               f"arguments {name} accepts ({exc})") from exc
        return result

    def _submit_deduped(self, task: Any, args: list[Any], kwargs: dict[str, Any],
                        options: dict[str, Any], dedupe_key: str,
                        dedupe_ttl: int | None) -> AsyncResult:
        from celery.utils import uuid

        from taskworks.resilience import idempotency

        if not isinstance(dedupe_key, str) or not dedupe_key:
            raise InvalidInput("dedupe_key", dedupe_key, "a non-empty str")
        ttl = self.settings.idempotency.ttl_seconds if dedupe_ttl is None else dedupe_ttl
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise InvalidInput("dedupe_ttl", dedupe_ttl, "seconds, an integer >= 1")
        client = self.runtime.get(idempotency.IdempotencyMiddleware).client
        task_id = options.setdefault("task_id", uuid())
        existing = idempotency.claim_dedupe_key(client, dedupe_key, task_id, ttl)
        if existing is not None:
            return self.app.AsyncResult(existing)  # queued before: nothing is sent
        try:
            result: AsyncResult = task.apply_async(args=args, kwargs=kwargs, **options)
        except BaseException:
            idempotency.release_dedupe_key(client, dedupe_key, task_id)  # let a retry send
            raise
        return result

    def submit_many(
        self, name: str, items: Iterable[Any], *, queue: str | None = None,
        priority: int | None = None, batch_size: int = 1000,
        countdown: float | None = None, eta: datetime | None = None,
        expires: float | datetime | None = None,
    ) -> list[str]:
        """Send many calls of one task, pipelined: one Redis round trip per ``batch_size``.

        Each item is a list or tuple of positional arguments, a dict of keyword arguments,
        or a 2-tuple ``(args, kwargs)``. Every item is checked before anything is sent.
        Routing is decided once, by task name and ``queue`` (function routers that look at
        the arguments are not consulted per message). A ``task-sent`` event goes with each
        message when the app sends them and a monitor is subscribed to receive them.
        ``countdown``/``eta`` and ``expires`` apply to every call, as in ``submit``.
        Returns the task ids, in order.
        """
        task = self.app.tasks.get(name)
        if task is None:
            raise InvalidInput("task", name, "the name of a registered task")
        if queue is not None and queue not in self.queue_names():
            raise InvalidInput("queue", queue, f"one of {', '.join(self.queue_names())}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput("batch_size", batch_size, "an integer >= 1")
        calls = [bulk.split_call(i, item) for i, item in enumerate(items)]
        if isinstance(task, TaskworksTask):  # same priority rule as apply_async
            chosen = priority if priority is not None else (
                task.priority if task.priority is not None else task.default_priority)
            priority = topology.broker_priority(chosen)
        now = datetime.now(UTC)
        due, deadline = publishing.checked_times(countdown, eta, expires, now)
        if deadline is None and getattr(task, "start_within", None) is not None:
            deadline = (due or now) + timedelta(seconds=task.start_within)
        ids = bulk.publish_many(self.app, task, calls, queue=queue, priority=priority,
                                batch_size=batch_size, eta=due, expires=deadline)
        if due is not None and due > now and getattr(task, "runtime", None) is not None:
            route = queue or self.route_of(name)
            for task_id, (args, kwargs) in zip(ids, calls, strict=True):
                publishing.journal_scheduled(self.runtime, task, task_id, route, args,
                                             kwargs, due, deadline)
        return ids

    def add_middleware(self, middleware: Middleware, *, before: type[Middleware] | None = None,
                       after: type[Middleware] | None = None) -> None:
        """Add your own middleware to the chain (before declaring tasks that use its
        options): right before or after the first middleware of the given class, else at
        the end; always before the journal's barrier, which must stay last."""
        self.runtime.add(middleware, before=before, after=after)

    @property
    def breakers(self) -> Breakers:
        """Circuit breakers by name: ``tw.breakers.get(name)``, ``.register(name, ...)``,
        ``.list()``, ``.show(name)``, ``.reset(name)``, ``.fallback(name, ...)``."""
        from taskworks.resilience.breaker_middleware import BreakerMiddleware

        middleware: BreakerMiddleware = self.runtime.get(BreakerMiddleware)
        return middleware.breakers

    @property
    def retry_policies(self) -> RetryPolicies:
        """Register policies by task name: ``tw.retry_policies.register(name, policy)``."""
        from taskworks.runtime.retry import RetryMiddleware

        middleware: RetryMiddleware = self.runtime.get(RetryMiddleware)
        return middleware.policies

    @property
    def rate_limits(self) -> RateLimits:
        """Named cluster-wide limits: ``tw.rate_limits.define("github-api", "50/s")``."""
        from taskworks.resilience.ratelimit import RateLimitMiddleware

        middleware: RateLimitMiddleware = self.runtime.get(RateLimitMiddleware)
        return middleware.limits

    @property
    def severity_rules(self) -> SeverityRules:
        """``tw.severity_rules.set(MyError, "critical")``: the most specific class wins."""
        middleware: SeverityMiddleware = self.runtime.get(SeverityMiddleware)
        return middleware.rules

    def on_error(self, exc_type: type[BaseException]) -> Callable[[ErrorCallback], ErrorCallback]:
        """Register a callback for failures of this exception type (and subclasses)."""
        middleware: SeverityMiddleware = self.runtime.get(SeverityMiddleware)

        def register(callback: ErrorCallback) -> ErrorCallback:
            middleware.callbacks.register(exc_type, callback)
            return callback

        return register

    def progress(self, task_id: str) -> TaskSnapshot:
        """The progress a task published (``taskworks.progress``), from any process."""
        return read_progress(self.app, task_id)

    def queue_names(self) -> list[str]:
        return [q.name for q in (self.app.conf.task_queues or ())]

    def route_of(self, name: str) -> str:
        """The queue a task of this name goes to when the caller names none."""
        task = self.app.tasks.get(name)
        declared = getattr(task, "queue", None)
        if declared:
            return str(declared)
        return topology.route_for(self.settings, name) or self.settings.default_queue
