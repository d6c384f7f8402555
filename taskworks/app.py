"""The ``Taskworks`` facade: a Celery app configured from settings, or an existing one adopted."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, overload

from celery import Celery, Task
from celery.result import AsyncResult
from kombu import Queue

from taskworks import signals, topology
from taskworks.errors import InvalidInput
from taskworks.runtime.chain import default_runtime
from taskworks.runtime.dlq import DeadLetterStore
from taskworks.runtime.middleware import Middleware, Runtime
from taskworks.runtime.progress import Progress, read_progress
from taskworks.runtime.retry import RetryPolicies
from taskworks.runtime.severity import ErrorCallback, SeverityMiddleware, SeverityRules
from taskworks.settings import Settings, load_settings
from taskworks.store.engine import Store

#: Celery options ``@tw.task`` passes through; middlewares add their own options
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
        if self.runtime is None or self.request.called_directly:
            return super().__call__(*args, **kwargs)  # a plain function call
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
        self.store = Store(self.settings.effective_database_url)
        self.runtime = default_runtime(self)
        self.dead_letters = DeadLetterStore(self.store)
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
    ) -> AsyncResult:
        """Send a registered task by name. Priority 0-9, 9 the most urgent."""
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
        result: AsyncResult = task.apply_async(args=list(args), kwargs=kwargs or {}, **options)
        return result

    def add_middleware(self, middleware: Middleware) -> None:
        """Add your own middleware at the end of the chain (before declaring tasks that use
        its options)."""
        self.runtime.add(middleware)

    @property
    def retry_policies(self) -> RetryPolicies:
        """Register policies by task name: ``tw.retry_policies.register(name, policy)``."""
        from taskworks.runtime.retry import RetryMiddleware

        middleware: RetryMiddleware = self.runtime.get(RetryMiddleware)
        return middleware.policies

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
