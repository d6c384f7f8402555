"""Adopted tasks: every task of the app runs through the runtime, whoever declared it.

``@tw.task`` tasks carry the middleware chain from their declaration. The others (an
adopted app's ``@app.task`` and ``@shared_task`` tasks, declared before or after
``Taskworks(app=...)``, or a task declared on ``tw.app`` directly) are adopted when a
worker starts: Celery's ``worker_init`` comes after the app's modules are imported and
before the worker builds a tracer per task, in the main process, so every pool's
processes and threads inherit it. Celery's tracer calls the task object itself when its
class defines ``__call__`` (``celery/app/trace.py: build_tracer``), so adoption gives the
task's class a ``__call__`` that runs the chain around the task's own call.

What stays Celery's: the task's retry options (``autoretry_for``, ``retry_backoff``,
``max_retries``, ``self.retry``) keep their meaning, and each retry is journaled (the
retry middleware lets Celery decide; runtime/retry.py). A task opts out with
``@app.task(taskworks=False)`` and gives middleware options with
``@app.task(taskworks_options={"severity": "high", "breaker": "payments"})``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.app.task import Task

from taskworks.broker.strategy import CELERY_DEFAULT, STRATEGY
from taskworks.errors import InvalidInput
from taskworks.logs import get_logger
from taskworks.runtime.middleware import Runtime

__all__ = ["OPT_OUT", "adopt_tasks"]

log = get_logger("taskworks.runtime")

#: the task attribute (a Celery task option) that keeps a task out of the runtime
OPT_OUT = "taskworks"
#: the task attribute that carries its middleware options
OPTIONS = "taskworks_options"


def adopt_tasks(app: Celery, runtime: Runtime) -> list[str]:
    """Give every task of ``app`` that has no runtime yet this one; returns their names.
    A task whose ``taskworks_options`` are wrong is left out, with one error line."""
    adopted = []
    for name, task in list(app.tasks.items()):
        if name.startswith("celery.") or getattr(task, OPT_OUT, True) is False:
            continue  # Celery's own canvas tasks, and tasks that opted out
        if getattr(task, "runtime", None) is not None:
            continue  # declared with @tw.task, or adopted already
        options = dict(getattr(task, OPTIONS, None) or {})
        try:
            _check(name, options, runtime)
        except InvalidInput as exc:
            log.error("task left out of the runtime: its taskworks_options are wrong",
                      task=name, error=str(exc))
            continue
        cls = type(task)
        if not hasattr(cls, "runtime"):  # a TaskworksTask runs its runtime itself
            cls.__call__ = _through(runtime, cls.__call__)
        if cls.Strategy == CELERY_DEFAULT:  # a refused requeue must not stop the worker
            cls.Strategy = STRATEGY
        cls.runtime = runtime
        cls.taskworks_options = options
        cls.taskworks_adopted = True
        adopted.append(name)
    if adopted:
        log.info("tasks adopted into the runtime", tasks=len(adopted))
    return adopted


def _check(name: str, options: dict[str, Any], runtime: Runtime) -> None:
    unknown = set(options) - runtime.option_names()
    if unknown:
        raise InvalidInput(f"{name}.{OPTIONS}", sorted(unknown)[0],
                           f"one of {', '.join(sorted(runtime.option_names()))}")
    runtime.validate(name, options)


def _through(runtime: Runtime, own_call: Callable[..., Any]) -> Callable[..., Any]:
    """A task class's ``__call__`` that runs the chain around the task's own call (the
    class's custom ``__call__`` if it has one, else its body)."""
    custom = own_call is not Task.__call__

    # not functools.wraps: Celery's tracer recognises a custom __call__ by its module
    # (one defined in celery.app.task is not), and would then bypass this one
    def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:
        if self.request.called_directly:
            return own_call(self, *args, **kwargs)  # a plain function call, as before
        body = functools.partial(own_call, self) if custom else self.run
        return runtime.execute(self, args, kwargs, body)

    return __call__
