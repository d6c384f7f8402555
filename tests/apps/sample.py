"""The app the tests' worker processes run: settings come from the environment."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import redis

from taskworks import Taskworks
from taskworks.runtime.retry import RetryPolicy

tw = Taskworks()


def _redis() -> redis.Redis:
    return redis.Redis.from_url(tw.settings.effective_broker_url)


def _record(self: Any, label: str, list_key: str = "tests:order") -> dict[str, Any]:
    """Append the label and where it ran to a Redis list: order and placement are observable."""
    queue = (self.request.delivery_info or {}).get("routing_key")
    _redis().rpush(list_key, f"{label}|{queue}|{os.getpid()}")
    return {"label": label, "queue": queue, "pid": os.getpid()}


# one body under several names: the routes send each name to its own queue
RECORDERS = {
    name: tw.task(name=name, bind=True)(_record)
    for name in ("tests.record", "tasks.cpu_intensive.crunch", "tasks.io_intensive.fetch",
                 "tasks.priority.alert", "tasks.scheduled.nightly")
}


@tw.task(name="tests.slow_mark")
def slow_mark(key: str, seconds: float) -> int:
    """Count executions, sleep, then mark done: a kill mid-sleep is observable."""
    client = _redis()
    runs = int(client.incr(f"{key}:runs"))
    client.set(f"{key}:pid:{runs}", os.getpid())
    time.sleep(seconds)
    client.incr(f"{key}:done")
    return runs


@tw.task(name="tests.log_inside")
def log_inside(marker: str) -> None:
    """Log through the standard library from inside a task."""
    logging.getLogger("tests.inside").warning("inside the task %s", marker)


@tw.task(name="tests.beat_tick")
def beat_tick(list_key: str = "tests:beat") -> None:
    _redis().rpush(list_key, repr(time.time()))


@tw.task(name="tests.stepper")
def stepper(steps: int, pause: float, fail: bool = False) -> dict[str, int]:
    """Report progress at every step, so another process can watch it move."""
    from taskworks.runtime.progress import progress

    for i in range(1, steps + 1):
        time.sleep(pause)
        progress(i, steps, status=f"step {i}")
    if fail:
        raise ValueError("boom at the end")
    return {"steps": steps}


# -- the task runtime ------------------------------------------------------------------
FAST = RetryPolicy(max_retries=3, base_delay=0.05, jitter=False)
ERRORS: dict[str, type[Exception]] = {
    "ValueError": ValueError, "ConnectionError": ConnectionError, "TypeError": TypeError,
    "MemoryError": MemoryError, "KeyError": KeyError,
}


@tw.task(name="tests.flaky", retry_policy=FAST)
def flaky(key: str, fail_times: int, exc: str = "ConnectionError") -> int:
    """Fail the first ``fail_times`` runs, then succeed; returns the run number."""
    run = int(_redis().incr(f"{key}:runs"))
    if run <= fail_times:
        raise ERRORS[exc](f"run {run} of {key} fails")
    return run


@tw.task(name="tests.always_fails",
         retry_policy=RetryPolicy(max_retries=2, base_delay=0.05, jitter=False))
def always_fails(key: str, exc: str = "ConnectionError") -> None:
    _redis().incr(f"{key}:runs")
    raise ERRORS[exc](f"{key} always fails")


@tw.task(name="tests.kills_its_process",
         retry_policy=RetryPolicy(max_retries=1, base_delay=0.05, jitter=False))
def kills_its_process(key: str) -> None:
    """Die like an OOM-killed process, on every delivery."""
    _redis().incr(f"{key}:runs")
    os.kill(os.getpid(), signal.SIGKILL)


@tw.task(name="tests.budgeted", retry_budget=2,
         retry_policy=RetryPolicy(max_retries=10, base_delay=0.05, jitter=False))
def budgeted(key: str) -> None:
    _redis().incr(f"{key}:runs")
    raise ConnectionError("downstream is down")


@tw.task(name="tests.toggle", retry_policy=RetryPolicy(max_retries=0))
def toggle(key: str) -> str:
    """Fails while the Redis key ``<key>:fail`` exists: a dead letter to replay."""
    if _redis().exists(f"{key}:fail"):
        raise KeyError(f"{key} is switched to fail")
    _redis().incr(f"{key}:ok")
    return "ok"


@tw.task(name="tests.echo", retry_policy=RetryPolicy(max_retries=0))
def echo(i: int, fail_every: int = 0, **secrets: Any) -> int:
    if fail_every and i % fail_every == 0:
        raise ValueError(f"item {i} fails")
    return i


@tw.task(name="tests.critical", severity="critical", retry_policy=RetryPolicy(max_retries=0))
def critical(message: str) -> None:
    raise ValueError(message)


@tw.on_error(KeyError)
def _broken_callback(exc: BaseException, ctx: Any) -> None:
    raise RuntimeError("this callback is broken on purpose")
