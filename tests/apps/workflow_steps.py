"""Step tasks for the workflow tests: each leaves a trace in Redis, so tests can see what
ran, in which order, how many times."""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING, Any

import redis

from taskworks.runtime.retry import RetryPolicy

if TYPE_CHECKING:
    from taskworks.app import Taskworks

NO_RETRY = RetryPolicy(max_retries=0)


def register(tw: Taskworks) -> None:
    def client() -> redis.Redis:
        return redis.Redis.from_url(tw.settings.effective_broker_url)

    @tw.task(name="wf.record", retry_policy=NO_RETRY)
    def record(input: Any = None, results: dict[str, Any] | None = None,
               label: str = "", key: str = "wf:order", sleep: float = 0.0,
               value: Any = None) -> dict[str, Any]:
        """Append ``label`` to a Redis list (order and count of executions are visible),
        optionally sleep first; return what the step saw."""
        if sleep:
            client().rpush(f"{key}:started", label)
            time.sleep(sleep)
        client().rpush(key, label)
        return {"label": label, "value": value, "deps": sorted(results or {})}

    @tw.task(name="wf.add", retry_policy=NO_RETRY)
    def add(input: Any = None, results: dict[str, Any] | None = None,
            amount: int = 0) -> int:
        """The run input's ``x`` (roots) or the sum of the dependencies' results, plus
        ``amount``: data passing made checkable."""
        base = sum((results or {}).values()) if results else int((input or {}).get("x", 0))
        return base + amount

    @tw.task(name="wf.fail", retry_policy=NO_RETRY)
    def fail(input: Any = None, results: dict[str, Any] | None = None,
             label: str = "", key: str = "wf:order", times: int = -1,
             switch: str | None = None, after: str | None = None) -> str:
        """Fail the first ``times`` runs (-1: always), or while the key ``switch`` exists;
        with ``after``, first wait (up to 10 s) until that Redis list is not empty."""
        r = client()
        deadline = time.monotonic() + 10
        while after and not r.llen(after) and time.monotonic() < deadline:
            time.sleep(0.02)
        run = int(r.incr(f"{key}:{label}:runs"))
        r.rpush(f"{key}:attempts", label)
        failing = bool(r.exists(switch)) if switch else (times < 0 or run <= times)
        if failing:
            raise ConnectionError(f"{label} fails (run {run})")
        r.rpush(key, label)
        return label

    @tw.task(name="wf.idempotent_add", idempotent=True, retry_policy=NO_RETRY)
    def idempotent_add(input: Any = None, results: dict[str, Any] | None = None,
                       amount: int = 0) -> int:
        """Counts its calls: a second call with the same input is answered from the
        stored result and never gets here."""
        client().incr("wf:idempotent_add:calls")
        return int((input or {}).get("x", 0)) + amount

    @tw.task(name="wf.fail_when_full")
    def fail_when_full(input: Any = None, results: dict[str, Any] | None = None,
                       label: str = "") -> str:
        """Its first run waits until the broker refuses writes (the test sets a tiny
        maxmemory), then fails, so its retry cannot be published; later runs succeed."""
        r = redis.Redis.from_url(tw.settings.effective_broker_url, decode_responses=True)
        if r.set("wf:full:started", 1, nx=True):
            deadline = time.monotonic() + 30
            while r.config_get("maxmemory")["maxmemory"] == "0" \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            raise ConnectionError(f"{label} fails while the broker is full")
        return label

    @tw.task(name="wf.kill_once", retry_policy=RetryPolicy(max_retries=2))
    def kill_once(input: Any = None, results: dict[str, Any] | None = None,
                  label: str = "", key: str = "wf:order") -> str:
        """SIGKILL its own process on the first run, like an OOM kill; succeed after."""
        r = client()
        run = int(r.incr(f"{key}:{label}:runs"))
        if run == 1:
            r.rpush(f"{key}:started", label)
            os.kill(os.getpid(), signal.SIGKILL)
        r.rpush(key, label)
        return label

    # a step task guarded by its own breaker and one limited by its own rate limit: the
    # workflow wrapper applies both (taskworks/workflows/admission.py)
    tw.breakers.register("wf.downstream", failure_threshold=2, reset_timeout=10.0,
                         count=(ConnectionError,))

    @tw.task(name="wf.guarded", breaker="wf.downstream", retry_policy=NO_RETRY)
    def guarded(input: Any = None, results: dict[str, Any] | None = None,
                label: str = "", key: str = "wf:order") -> str:
        """Fails (ConnectionError) while the Redis key ``<key>:down`` exists."""
        r = client()
        r.rpush(f"{key}:attempts", label)
        if r.exists(f"{key}:down"):
            raise ConnectionError(f"{label}: downstream is down")
        r.rpush(key, label)
        return label

    @tw.task(name="wf.limited", rate_limit="2/m", retry_policy=NO_RETRY)
    def limited(input: Any = None, results: dict[str, Any] | None = None,
                label: str = "", key: str = "wf:order") -> str:
        client().rpush(key, label)
        return label

    @tw.task(name="wf.noop", retry_policy=NO_RETRY)
    def noop(input: Any = None, results: dict[str, Any] | None = None,
             **params: Any) -> int:
        """Nothing; a fan-in returns how many results it received."""
        return len(results or {})

    @tw.task(name="wf.unserialisable", retry_policy=NO_RETRY)
    def unserialisable(input: Any = None, results: Any = None) -> Any:
        return object()

    @tw.task(name="wf.waits_inside", retry_policy=NO_RETRY)
    def waits_inside(run_id: str) -> str:
        """Run.wait() inside a task must refuse, not block the worker."""
        try:
            tw.workflows.run(run_id).wait(timeout=5)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "waited"

    tw.workflows.predicates.register(
        "input_is_large", lambda doc: int((doc["input"] or {}).get("size", 0)) > 100)

    # the patterns guide's workflows, for real
    from examples.workflows import steps as example_steps

    example_steps.register(tw)
