"""The app the tests' worker processes run: settings come from the environment."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import redis
from celery.worker.control import inspect_command

from examples import patterns
from taskworks import Taskworks
from taskworks.errors import HttpUnavailable
from taskworks.runtime.retry import RetryPolicy
from tests.mapreduce import job_functions

tw = Taskworks()
patterns.register(tw)  # the patterns guide's task patterns, tested in tests/examples/
job_functions.register(tw)  # a custom map-reduce function, tests/mapreduce/


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


# -- resilience: idempotent tasks and cluster-wide rate limits -------------------------
def _idem_body(key: str, seconds: float = 0.0) -> dict[str, Any]:
    """Count executions of one call; sleep so that duplicates arrive while it runs."""
    client = _redis()
    run = int(client.incr(f"{key}:runs"))
    client.set(f"{key}:pid:{run}", os.getpid())
    time.sleep(seconds)
    client.incr(f"{key}:done")
    return {"key": key, "run": run, "pid": os.getpid()}


idem_work = tw.task(name="tests.idem_work", idempotent=True)(_idem_body)
idem_drop = tw.task(name="tests.idem_drop", idempotent=True, on_duplicate="drop")(_idem_body)


@tw.task(name="tests.idem_by_order",
         idempotency_key=lambda args, kwargs: f"order-{kwargs['order_id']}")
def idem_by_order(order_id: int, note: str = "") -> dict[str, Any]:
    """Keyed by the order id alone: a different note is still the same call."""
    run = int(_redis().incr(f"order:{order_id}:runs"))
    return {"order_id": order_id, "note": note, "run": run}


@tw.task(name="tests.idem_fails_once", idempotent=True,
         retry_policy=RetryPolicy(max_retries=2, base_delay=0.05, jitter=False))
def idem_fails_once(key: str) -> int:
    """A failure stores nothing: the retry runs, then the success is stored."""
    run = int(_redis().incr(f"{key}:runs"))
    if run == 1:
        raise ConnectionError("first run fails")
    return run


def _admit(key: str) -> float:
    """Record the admission time of a rate-limited task (its body runs when admitted)."""
    now = time.time()
    _redis().rpush(f"{key}:admitted", repr(now))
    return now


limited = tw.task(name="tests.limited", rate_limit="50/s")(_admit)
tw.rate_limits.define("tests-shared-api", "10/s")
shared_a = tw.task(name="tests.shared_a", rate_limit_name="tests-shared-api")(_admit)
shared_b = tw.task(name="tests.shared_b", rate_limit_name="tests-shared-api")(_admit)


# -- circuit breakers ------------------------------------------------------------------
tw.breakers.register("tests.guarded", failure_threshold=2, reset_timeout=2.0,
                     count=(ConnectionError,))
# long enough to outlive a worker restart
tw.breakers.register("tests.guarded_long", failure_threshold=2, reset_timeout=5.0,
                     count=(ConnectionError,))


def _guarded(key: str) -> int:
    """Fails while the Redis key ``<key>:fail`` exists; counts and times every run."""
    run = int(_redis().incr(f"{key}:runs"))
    _redis().rpush(f"{key}:at", repr(time.time()))
    if _redis().exists(f"{key}:fail"):
        raise ConnectionError(f"{key} is down")
    return run


GUARDED = {name: tw.task(name=name, breaker=name, retry_policy=RetryPolicy(max_retries=0))(
    _guarded) for name in ("tests.guarded", "tests.guarded_long")}


from tests.apps import workflow_steps  # noqa: E402  (the workflow tests' step tasks)
from tests.soak import soak_tasks  # noqa: E402  (the soak's flaky and idempotent tasks)

workflow_steps.register(tw)
soak_tasks.register(tw)

# taskworks.http_call against the tests' local servers: quick retries, a quick host breaker
tw.retry_policies.register("taskworks.http_call", RetryPolicy(
    max_retries=2, base_delay=0.05, jitter=False, retry_on=(HttpUnavailable,)))
tw.breakers.register_family("http:127.0.0.1:", failure_threshold=3, reset_timeout=2.0,
                            count=(HttpUnavailable,))


@tw.task(name="tests.memory_hog", retry_policy=RetryPolicy(max_retries=0))
def memory_hog(fail: bool) -> int:
    """The pid of the process that ran it; raises MemoryError when asked."""
    if fail:
        raise MemoryError("pretend the heap is full")
    return os.getpid()


@tw.task(name="tests.idem_self_retry", idempotent=True, bind=True)
def idem_self_retry(self: Any, key: str) -> int:
    """Retries itself from its body once: its lease must not block its own retry."""
    run = int(_redis().incr(f"{key}:runs"))
    if run == 1:
        raise self.retry(countdown=0.1)
    return run


@tw.task(name="tests.sleeps", retry_policy=RetryPolicy(max_retries=0))
def sleeps(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


@inspect_command()
def timer_heap(state: Any) -> dict[str, int]:
    """Entries in the worker's event-loop timer heap (tests/test_pool.py)."""
    return {"entries": len(state.consumer.controller.hub.timer._queue)}


@tw.task(name="tests.ignores_soft_limit", retry_policy=RetryPolicy(max_retries=0))
def ignores_soft_limit(seconds: float) -> str:
    """Catches the soft time limit and sleeps on: only the hard limit stops it."""
    from celery.exceptions import SoftTimeLimitExceeded

    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        time.sleep(seconds)
    return "outlived"


@tw.task(name="tests.on_time", retry_policy=RetryPolicy(max_retries=0), ignore_result=True)
def on_time(index: int, due: float, key: str = "tests:on-time") -> None:
    """How late (seconds after ``due``) call ``index`` started, and how often it ran."""
    started = time.time()
    pipe = _redis().pipeline(transaction=False)
    pipe.hset(key, str(index), repr(started - due))
    pipe.hincrby(f"{key}:runs", str(index), 1)
    pipe.execute()


@tw.task(name="tests.must_start_soon", start_within=1.0, retry_policy=RetryPolicy(max_retries=0))
def must_start_soon(key: str) -> None:
    _redis().incr(key)
