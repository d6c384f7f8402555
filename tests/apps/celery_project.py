"""A plain Celery project, adopted in one line as the README shows.

Its workers are started the project's own way (``celery -A tests.apps.celery_project
worker``) and the taskworks way (``taskworks worker --app tests.apps.celery_project:tw``).
Settings come from the environment the tests set (tests/conftest.py).
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis
from celery import Celery, shared_task

from taskworks import Taskworks

BROKER = os.environ["TASKWORKS_BROKER_URL"]

app = Celery("proj", broker=BROKER, backend=BROKER)
app.conf.task_acks_late = os.environ.get("PROJ_ACKS_LATE", "1") == "1"
app.conf.worker_prefetch_multiplier = 1
if os.environ.get("PROJ_TRANSPORT") == "taskworks":  # the README's opt-in line
    app.conf.broker_transport = "taskworks.broker.transport:Transport"
if "PROJ_VISIBILITY_TIMEOUT" in os.environ:
    app.conf.broker_transport_options = {
        "visibility_timeout": int(os.environ["PROJ_VISIBILITY_TIMEOUT"])}


def _redis() -> redis.Redis:
    return redis.Redis.from_url(BROKER, decode_responses=True)


@app.task(name="proj.add")
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="proj.flaky", autoretry_for=(ConnectionError,), max_retries=2,
          default_retry_delay=0)
def flaky(key: str) -> None:
    _redis().incr(f"{key}:runs")
    raise ConnectionError("the downstream is down")


@app.task(name="proj.broken")
def broken(n: int) -> None:
    raise ValueError(f"bad value {n}")


@app.task(name="proj.retry_once", bind=True, max_retries=3)
def retry_once(self: Any, key: str) -> str:
    if _redis().incr(f"{key}:runs") == 1:
        raise self.retry(countdown=0, exc=TimeoutError("first call times out"))
    return "second time lucky"


@app.task(name="proj.critical", taskworks_options={"severity": "critical"})
def critical(n: int) -> None:
    raise RuntimeError(f"critical {n}")


@app.task(name="proj.outside", taskworks=False)
def outside(n: int) -> int:
    """Opted out: no journal row, no dead letter."""
    if n < 0:
        raise ValueError(n)
    return n


@shared_task(name="proj.shared")
def shared(n: int) -> int:
    return n * 2


@app.task(name="proj.succeed_when_released")
def succeed_when_released(key: str) -> str:
    """Counts its runs, waits until the test releases it, then succeeds."""
    client = _redis()
    client.incr(f"{key}:runs")
    deadline = time.monotonic() + 60
    while not client.exists(f"{key}:go") and time.monotonic() < deadline:
        time.sleep(0.05)
    return key


@app.task(name="proj.fail_when_released")
def fail_when_released(key: str) -> None:
    """Counts its runs, waits until the test releases it, then fails for good: the test
    breaks the store in between, so the dead letter is written while it is down."""
    client = _redis()
    client.incr(f"{key}:runs")
    deadline = time.monotonic() + 60
    while not client.exists(f"{key}:go") and time.monotonic() < deadline:
        time.sleep(0.05)
    raise ValueError(f"{key} fails for good")


@app.task(name="proj.retry_when_released", bind=True, autoretry_for=(ConnectionError,),
          max_retries=3, default_retry_delay=0)
def retry_when_released(self: Any, key: str) -> str:
    """Fails on its first delivery once the broker refuses writes (the test sets a
    tiny maxmemory), so that its retry cannot be published; a redelivery succeeds."""
    client = _redis()
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    if not redelivered:
        client.set(f"{key}:started", 1)
        deadline = time.monotonic() + 60
        while client.config_get("maxmemory")["maxmemory"] == "0" \
                and time.monotonic() < deadline:
            time.sleep(0.05)
    if not redelivered:
        raise ConnectionError("first delivery fails")  # no write: the broker refuses them
    client.rpush(f"{key}:log", "succeeded")
    return "done"


tw = Taskworks(app=app)


@app.task(name="proj.late")
def late(n: int) -> int:
    """Declared after Taskworks(app=app): adopted all the same."""
    return n + 1
