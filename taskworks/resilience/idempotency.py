"""Idempotent tasks (the patterns guide's idempotent_task, JSON instead of pickle) and enqueue
dedupe.

``@tw.task(idempotent=True)`` keys a call by task name + sha256 of the canonical JSON of
its arguments; ``idempotency_key=fn`` (``fn(args, kwargs) -> str``) keys it yourself.

- The first execution takes a *lease* and runs. The lease is renewed while the task runs
  (one thread per process renews all of its leases), so a killed worker's lease lapses
  after ``idempotency.lease_seconds`` and the acks_late redelivery runs once more.
- A duplicate arriving while it runs is deferred (re-sent without spending a retry) until
  the result exists (``on_duplicate="wait"``), or answers at once with
  ``{"status": "duplicate", "task_id": <the running one>}`` (``"drop"``).
- A duplicate after a success returns the stored result (JSON, ``idempotency_ttl``)
  without running. A failure stores nothing: the next attempt runs.

Acquire-or-return-the-stored-result is one Lua call: one round trip before the body,
one after it (store the result and drop the lease, also one Lua call).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
from celery import signals

from taskworks import keys
from taskworks.broker.urls import redis_client
from taskworks.errors import DuplicateRunning, InvalidInput
from taskworks.logs import get_logger
from taskworks.runtime.middleware import Middleware, TaskContext, defer

__all__ = ["ON_DUPLICATE", "Duplicate", "IdempotencyMiddleware", "KeyFunction", "LeaseRenewer",
           "call_key", "canonical_digest", "claim_dedupe_key", "release_dedupe_key"]

log = get_logger("taskworks.idempotency")

ON_DUPLICATE = ("wait", "drop")
KeyFunction = Callable[[tuple[Any, ...], dict[str, Any]], str]


def _script(client: redis.Redis, name: str) -> Any:
    return client.register_script(
        (resources.files("taskworks.resilience") / name).read_text())


def canonical_digest(args: Any, kwargs: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the arguments: equal calls give equal digests."""
    try:
        text = json.dumps([list(args), dict(kwargs)], sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidInput("arguments", (args, kwargs), f"JSON-serialisable values ({exc})") \
            from None
    return hashlib.sha256(text.encode()).hexdigest()


def call_key(task_name: str, options: Mapping[str, Any], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> tuple[str, str] | None:
    """The (result, lease) keys of this call, or None when the task is not idempotent."""
    key_fn: KeyFunction | None = options.get("idempotency_key")
    if key_fn is not None:
        custom = key_fn(args, kwargs)
        if not isinstance(custom, str) or not custom:
            raise InvalidInput("idempotency_key", custom,
                               "the key function to return a non-empty str")
        return keys.idempotency(task_name, hashlib.sha256(custom.encode()).hexdigest())
    if options.get("idempotent"):
        return keys.idempotency(task_name, canonical_digest(args, kwargs))
    return None


class LeaseRenewer:
    """One daemon thread per process renews every lease the process holds.

    A lease is renewed every third of its length while its task runs; a task that never
    finishes (its process hung) stops being renewed after ``max_hold`` seconds.
    """

    def __init__(self, client: Callable[[], redis.Redis], lease_ms: int,
                 max_hold: float) -> None:
        self._client = client
        self.lease_ms = lease_ms
        self.max_hold = max_hold
        self._held: dict[str, tuple[str, float]] = {}  # lease key -> (holder, give up at)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid = 0
        self._renew: Any = None

    def hold(self, lease_key: str, holder: str) -> None:
        with self._lock:
            self._held[lease_key] = (holder, time.monotonic() + self.max_hold)
            if self._pid != os.getpid():  # first lease here, or a forked pool child
                self._pid = os.getpid()
                self._wake = threading.Event()
                threading.Thread(target=self._run, name="taskworks-lease-renewer",
                                 daemon=True).start()

    def release(self, lease_key: str, holder: str | None = None) -> None:
        with self._lock:
            if holder is None or self._held.get(lease_key, ("",))[0] == holder:
                self._held.pop(lease_key, None)

    def stop(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        wake = self._wake
        while not wake.wait(self.lease_ms / 3000):
            try:
                self.renew_now()
            except redis.RedisError as exc:  # the next tick tries again within the lease
                log.warning("lease renewal failed", error=str(exc))

    def renew_now(self) -> None:
        now = time.monotonic()
        with self._lock:
            for key in [k for k, (_, until) in self._held.items() if until < now]:
                del self._held[key]
            held = list(self._held.items())
        if not held:
            return
        client = self._client()
        if self._renew is None:
            self._renew = _script(client, "idempotency_renew.lua")
        pipe = client.pipeline(transaction=False)
        for key, (holder, _) in held:
            self._renew(keys=[key], args=[holder, self.lease_ms], client=pipe)
        for (key, (holder, _)), renewed in zip(held, pipe.execute(), strict=True):
            if not renewed:  # lapsed (the process stalled longer than the lease)
                log.warning("idempotency lease lost: a duplicate may run", lease=key,
                            holder=holder)
                self.release(key, holder)


@dataclass(frozen=True)
class Duplicate:
    """What ``on_duplicate="drop"`` answers: the call is already running as ``task_id``."""

    task_id: str

    def as_result(self) -> dict[str, str]:
        return {"status": "duplicate", "task_id": self.task_id}


class IdempotencyMiddleware(Middleware):
    """Runs an idempotent call once; duplicates wait for, or get, the stored result."""

    options = frozenset({"idempotent", "idempotency_key", "on_duplicate", "idempotency_ttl"})

    def __init__(self, broker_url: str, *, ttl_seconds: int, lease_seconds: float,
                 wait_interval: float, max_hold: float) -> None:
        self.broker_url = broker_url
        self.ttl_seconds = ttl_seconds
        self.wait_interval = wait_interval
        # made now, not on first use: a threads pool's first tasks raced to make one
        # each, and one called a script not yet set (seen in the soak); a forked pool
        # child gets fresh connections (redis-py's pools check the pid)
        self.client = redis_client(broker_url)
        self._acquire = _script(self.client, "idempotency_acquire.lua")
        self._complete = _script(self.client, "idempotency_complete.lua")
        self.renewer = LeaseRenewer(lambda: self.client, int(lease_seconds * 1000), max_hold)
        signals.task_postrun.connect(self._after_run)  # weak: goes with this middleware

    def validate(self, task_name: str, options: Mapping[str, Any]) -> None:
        idempotent = options.get("idempotent")
        if idempotent is not None and not isinstance(idempotent, bool):
            raise InvalidInput("idempotent", idempotent, "True or False")
        key_fn = options.get("idempotency_key")
        if key_fn is not None and not callable(key_fn):
            raise InvalidInput("idempotency_key", key_fn,
                               "a function (args, kwargs) -> str")
        on_duplicate = options.get("on_duplicate")
        if on_duplicate is not None and on_duplicate not in ON_DUPLICATE:
            raise InvalidInput("on_duplicate", on_duplicate, " or ".join(ON_DUPLICATE))
        ttl = options.get("idempotency_ttl")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
            raise InvalidInput("idempotency_ttl", ttl, "seconds, an integer >= 1")
        enabled = bool(idempotent) or key_fn is not None
        if not enabled and (on_duplicate is not None or ttl is not None):
            raise InvalidInput("idempotent", idempotent,
                               "idempotent=True or idempotency_key= with on_duplicate/"
                               "idempotency_ttl")

    # -- the hooks ------------------------------------------------------------------
    def before_task(self, ctx: TaskContext) -> None:
        lease = self._lease(ctx)
        if lease is None:
            return
        result_key, lease_key, holder = lease
        client = self.client
        reply = self._acquire(keys=[result_key, lease_key],
                              args=[holder, self.renewer.lease_ms], client=client)
        state = reply[0].decode()
        if state == "acquired":
            # kept on this execution's request, where after_* and task_postrun find it
            ctx.task.request.taskworks_lease = lease
            self.renewer.hold(lease_key, holder)
            return
        if state == "done":
            ctx.result = json.loads(reply[1])
            ctx.answered = True
            return
        running = reply[1].decode().split("|", 1)[0]
        if ctx.options.get("on_duplicate", "wait") == "drop":
            ctx.result = Duplicate(running).as_result()
            ctx.answered = True
            return
        log.debug("duplicate waits for the running call", task=ctx.name,
                  running=running, task_id=ctx.task_id)
        raise defer(ctx.task, self.wait_interval, DuplicateRunning(running))

    def after_success(self, ctx: TaskContext) -> None:
        if ctx.answered:
            return  # a stored result or a dropped duplicate: nothing of ours to store
        lease = self._take(ctx.task.request)
        if lease is None:
            return
        result_key, lease_key, holder = lease
        try:
            stored = json.dumps(ctx.result, separators=(",", ":"))
        except (TypeError, ValueError):
            log.warning("result is not JSON: not stored, a duplicate will run again",
                        task=ctx.name, task_id=ctx.task_id)
            stored = ""
        ttl = ctx.options.get("idempotency_ttl", self.ttl_seconds)
        self._finish(result_key, lease_key, holder, stored, ttl)

    def after_failure(self, ctx: TaskContext) -> None:
        lease = self._take(ctx.task.request)
        if lease is not None:  # nothing stored: a retry or a duplicate may run it again
            self._finish(*lease, "", 1)

    def _after_run(self, task: Any = None, **_: Any) -> None:
        """task_postrun: a body that raised Retry, Ignore or Reject itself ran no after_*
        hook; its lease is dropped here, or its own retry would wait behind it."""
        runtime = getattr(task, "runtime", None)
        if runtime is None or self not in runtime.middlewares:
            return
        lease = self._take(task.request)
        if lease is not None:
            self._finish(*lease, "", 1)

    # -- helpers --------------------------------------------------------------------
    def _lease(self, ctx: TaskContext) -> tuple[str, str, str] | None:
        found = call_key(ctx.name, ctx.options, ctx.args, ctx.kwargs)
        if found is None:
            return None
        # the holder names this attempt: a redelivered copy of the same message must not
        # take over a lease its crashed predecessor may still be renewing
        holder = f"{ctx.task_id}|{uuid.uuid4().hex[:12]}"
        return (*found, holder)

    @staticmethod
    def _take(request: Any) -> tuple[str, str, str] | None:
        """The lease this execution holds, forgotten: it is finished exactly once."""
        lease: tuple[str, str, str] | None = getattr(request, "taskworks_lease", None)
        if lease is not None:
            request.taskworks_lease = None
        return lease

    def _finish(self, result_key: str, lease_key: str, holder: str, stored: str,
                ttl: int) -> None:
        self.renewer.release(lease_key)
        self._complete(keys=[result_key, lease_key], args=[holder, stored, ttl],
                       client=self.client)

    def on_worker_shutdown(self) -> None:
        self.renewer.stop()


def claim_dedupe_key(client: redis.Redis, dedupe_key: str, task_id: str,
                     ttl: int) -> str | None:
    """Atomically claim ``dedupe_key`` for ``task_id`` (SET NX GET, one round trip).

    Returns None when claimed (send the task), else the id of the task that holds it.
    """
    previous = client.set(keys.dedupe(dedupe_key), task_id, nx=True, ex=ttl, get=True)
    if previous is None:
        return None
    return previous.decode() if isinstance(previous, bytes) else str(previous)


def release_dedupe_key(client: redis.Redis, dedupe_key: str, task_id: str) -> None:
    """Undo a claim whose task could not be sent (only if it is still ours)."""
    key = keys.dedupe(dedupe_key)
    if client.get(key) in (task_id, task_id.encode()):
        client.delete(key)
