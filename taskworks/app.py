"""The ``Taskworks`` facade: a Celery app configured from settings, or an existing one adopted."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, overload

from celery import Celery, Task
from celery.result import AsyncResult
from kombu import Queue

from taskworks import signals, topology
from taskworks.errors import InvalidInput
from taskworks.mapreduce.jobs import Jobs
from taskworks.resilience.breaker_registry import Breakers
from taskworks.resilience.ratelimit import RateLimits
from taskworks.runtime.chain import default_runtime
from taskworks.runtime.dlq import DeadLetterStore
from taskworks.runtime.middleware import Middleware, Runtime
from taskworks.runtime.progress import Progress, read_progress
from taskworks.runtime.retry import RetryPolicies
from taskworks.runtime.severity import ErrorCallback, SeverityMiddleware, SeverityRules
from taskworks.settings import Settings, load_settings
from taskworks.store.engine import Store
from taskworks.workflows.api import Workflows

#: Celery options ``@tw.task`` passes through; middlewares add their own options.
#: ``rate_limit`` is deliberately NOT here: it is taskworks' cluster-wide limit
#: (resilience/ratelimit.py); Celery's per-worker attribute of the same name stays unset.
CELERY_OPTIONS = frozenset({
    "name", "queue", "priority", "soft_time_limit", "time_limit", "bind",
    "ignore_result", "acks_late",
})


class TaskworksTask(Task):  # type: ignore[misc]
    """Base class of every taskworks task: owns the priority scale at the broker boundary."""

    #: the default urgency (0-9, 9 most urgent) when neither task nor caller sets one
    default_priority = 5
    #: retry limits are the retry policy's business (runtime/retry.py), not Celery's
    max_retries = None
    #: the middleware chain; None for tasks declared outside taskworks
    runtime: Runtime | None = None
    #: this task's middleware options, as declared
    taskworks_options: dict[str, Any] = {}

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
        return super().apply_async(
            args, kwargs, task_id, producer, link, link_error, shadow, **options
        )

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
        else:
            self._add_missing_queues(app)
        self.app: Celery = app
        self.store = Store(self.settings.effective_database_url,
                           busy_timeout_ms=int(self.settings.sqlite_busy_timeout * 1000))
        self.runtime = default_runtime(self)
        self.dead_letters = DeadLetterStore(self.store)
        #: durable DAG workflows: ``tw.workflows.register(wf)``, ``.start(name, input)``
        self.workflows = Workflows(self)
        #: map-reduce jobs: ``tw.jobs.start(dataset, function, params, partition_size)``
        self.jobs = Jobs(self)
        signals.connect(self)
        from taskworks.tasks import builtin  # here: the built-ins need a Taskworks to bind to

        builtin.register(self)

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
        task_id: str | None = None, headers: dict[str, Any] | None = None,
        dedupe_key: str | None = None, dedupe_ttl: int | None = None,
    ) -> AsyncResult:
        """Send a registered task by name. Priority 0-9, 9 the most urgent.

        With ``dedupe_key``, a second submit with the same key (within ``dedupe_ttl``
        seconds, default ``idempotency.ttl_seconds``) sends nothing and returns the
        result of the task the first one queued (an atomic SET NX in Redis).
        """
        task = self.app.tasks.get(name)
        if task is None:
            raise InvalidInput("task", name, "the name of a registered task")
        if queue is not None and queue not in self.queue_names():
            raise InvalidInput("queue", queue, f"one of {', '.join(self.queue_names())}")
        if countdown is not None and countdown < 0:
            raise InvalidInput("countdown", countdown, "a number of seconds >= 0")
        options: dict[str, Any] = {}
        if queue is not None:
            options["queue"] = queue
        if priority is not None:
            options["priority"] = priority
        if countdown is not None:
            options["countdown"] = countdown
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
    ) -> list[str]:
        """Send many calls of one task, pipelined: one Redis round trip per ``batch_size``.

        Each item is a list or tuple of positional arguments, a dict of keyword arguments,
        or a 2-tuple ``(args, kwargs)``. Every item is checked before anything is sent.
        Routing is decided once, by task name and ``queue`` (function routers that look at
        the arguments are not consulted per message). A ``task-sent`` event goes with each
        message when the app sends them and a monitor is subscribed to receive them.
        Returns the task ids, in order.
        """
        from celery import signals as celery_signals
        from celery.utils import uuid
        from celery.utils.saferepr import saferepr

        task = self.app.tasks.get(name)
        if task is None:
            raise InvalidInput("task", name, "the name of a registered task")
        if queue is not None and queue not in self.queue_names():
            raise InvalidInput("queue", queue, f"one of {', '.join(self.queue_names())}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInput("batch_size", batch_size, "an integer >= 1")

        sequences = (list, tuple)  # not list | tuple: that builds a new union per call

        def split(index: int, item: Any) -> tuple[list[Any], dict[str, Any]]:
            if (isinstance(item, tuple) and len(item) == 2
                    and isinstance(item[0], sequences) and isinstance(item[1], dict)):
                return list(item[0]), item[1]
            if isinstance(item, sequences):
                return list(item), {}
            if isinstance(item, dict):
                return [], item
            raise InvalidInput(f"items[{index}]", item,
                               "a list of arguments, a dict of keyword arguments or (args, kwargs)")

        calls = [split(i, item) for i, item in enumerate(items)]
        if not calls:
            return []
        route = self.app.amqp.router.route({"queue": queue} if queue else {}, name, (), {},
                                           task_type=task)
        if isinstance(task, TaskworksTask):  # same priority rule as apply_async
            chosen = priority if priority is not None else (
                task.priority if task.priority is not None else task.default_priority)
            broker_priority: int | None = topology.broker_priority(chosen)
        else:
            broker_priority = priority if priority is not None else route.get("priority")
        target: Queue = route["queue"]
        conf = self.app.conf
        # like Celery's send_task_message: a direct exchange becomes the anonymous exchange
        if target.exchange is None or target.exchange.type == "direct":
            exchange, routing_key = "", target.name
        else:
            exchange = target.exchange.name
            routing_key = route.get("routing_key") or target.routing_key
        delivery_mode = (target.exchange.delivery_mode if target.exchange else None) \
            or conf.task_default_delivery_mode
        send_event = bool(conf.task_send_sent_event)
        current = self.app.current_worker_task  # called from inside a task: link the lineage
        parent_id = current.request.id if current else None
        root_id = (current.request.root_id or parent_id) if current else None
        amqp, ids = self.app.amqp, []
        # read once: Celery's settings lookups cost more than building a message
        serializer, compression = conf.task_serializer, conf.task_compression
        reply_to, time_limit, soft_time_limit = (
            self.app.thread_oid, task.time_limit, task.soft_time_limit)
        levels = conf.task_repr_maxlevels  # as_task_v2 would look it up twice per message
        args_max, kwargs_max = amqp.argsrepr_maxsize, amqp.kwargsrepr_maxsize
        with self.app.producer_or_acquire() as producer:
            producer.maybe_declare(target)
            client: Any = getattr(producer.channel, "client", None)
            if send_event and hasattr(client, "pubsub_numpat"):
                # Redis pub/sub drops what nobody listens to: with no monitor subscribed,
                # the task-sent events would cost half the time and reach no one
                pipe = client.pipeline(transaction=False)
                pipe.pubsub_numpat()
                pipe.pubsub_channels(f"*{conf.event_exchange}*")
                patterns, channels = pipe.execute()
                send_event = bool(patterns or channels)
            events = self.app.events.Dispatcher(connection=producer.connection, enabled=False) \
                if send_event else None
            # kombu's transport-owned batch: its Redis publishes go through one pipeline
            with producer.batch(max_size=batch_size * (2 if send_event else 1)):
                for args, kwargs in calls:
                    task_id = uuid()
                    headers, properties, body, sent = amqp.create_task_message(
                        task_id, name, args, kwargs, reply_to=reply_to,
                        time_limit=time_limit, soft_time_limit=soft_time_limit,
                        create_sent_event=send_event, root_id=root_id, parent_id=parent_id,
                        ignore_result=task.ignore_result,
                        argsrepr=saferepr(args, args_max, maxlevels=levels),
                        kwargsrepr=saferepr(kwargs, kwargs_max, maxlevels=levels),
                    )
                    if celery_signals.before_task_publish.receivers:
                        celery_signals.before_task_publish.send(
                            sender=name, body=body, exchange=exchange, routing_key=routing_key,
                            declare=[target], headers=headers, properties=properties,
                            retry_policy={})
                    producer.publish(
                        body, exchange=exchange, routing_key=routing_key, retry=False,
                        serializer=serializer, compression=compression,
                        headers=headers, priority=broker_priority or 0,
                        delivery_mode=delivery_mode, **properties,
                    )
                    if celery_signals.after_task_publish.receivers:
                        celery_signals.after_task_publish.send(
                            sender=name, body=body, headers=headers, exchange=exchange,
                            routing_key=routing_key)
                    if events is not None:
                        sent.update(queue=target.name, exchange=exchange,
                                    routing_key=routing_key)
                        events.publish("task-sent", sent, producer)
                    ids.append(task_id)
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

    def progress(self, task_id: str) -> Progress:
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
