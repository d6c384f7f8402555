"""The durable schedule: messages that are not due yet wait in Redis, never in a worker.

Celery delivers a task with a ``countdown`` or ``eta`` at once, and the worker holds it
in memory until it is due. On Redis that breaks twice: a message held longer than the
visibility timeout is handed to a second worker (kombu #337, celery #4400), and a
worker holding thousands of them runs out of memory. This transport keeps such a
message out of the queue instead: ``Channel._put`` sees a future ``eta`` and adds the
message to a sorted set scored by its due time (``add``), with its ``eta`` header
cleared, so that when it is due the worker runs it at once. A mover in every process
that consumes (and in beat) publishes what is due (``move_due``, one Lua script: each
message exactly once, whichever process runs it, and a process killed mid-move moved a
whole batch or none of it). Publishing and consuming are otherwise unchanged: Celery's
``countdown``, ``eta`` and retry backoff all come through here.

The fence: a periodic entry's fire is published only if its last fire time is still
the one the beat read, and that time is advanced in the same script (``fenced``), so
neither a restart nor a new leader repeats or loses a fire.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from time import time
from typing import Any

import redis
from kombu.utils.json import dumps
from redis.commands.core import Script
from redis.exceptions import RedisError

from taskworks import keys
from taskworks.logs import get_logger

__all__ = ["MOVE_BUDGET", "MOVE_INTERVAL", "Fence", "Mover", "add", "add_command", "cancel",
           "due_of", "envelope", "fenced", "fire", "move_due", "mover_for", "stop_movers",
           "take_fence", "unscheduled"]

log = get_logger("taskworks.schedule")

#: messages one move publishes at most (the script is atomic: a bounded pause)
MOVE_BUDGET = 1000
#: the longest a mover sleeps between two looks: the bound on how late a message that
#: another process scheduled can be published
MOVE_INTERVAL = 0.2


def _script(name: str) -> Script:
    text = (resources.files("taskworks.broker") / name).read_text()
    return Script(None, text.encode())  # type: ignore[arg-type]  # each call names its client


_ADD = _script("schedule_add.lua")
_MOVE = _script("schedule_move.lua")
_CANCEL = _script("schedule_cancel.lua")
_FIRE = _script("schedule_fire.lua")

_SCHEDULE_KEYS = [keys.SCHEDULE, keys.SCHEDULE_ENVELOPES, keys.SCHEDULE_IDS,
                  keys.SCHEDULE_COUNTS]


def due_of(message: dict[str, Any]) -> float | None:
    """The epoch second a kombu message of a Celery task is due, from its ``eta``
    header; None when it has none or it is not a date."""
    headers = message.get("headers")
    eta = headers.get("eta") if isinstance(headers, dict) else None
    if not isinstance(eta, str):
        return None
    try:
        when = datetime.fromisoformat(eta)
    except ValueError:
        return None
    if when.tzinfo is None:  # Celery's apps here run in UTC (topology: enable_utc)
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def unscheduled(message: dict[str, Any], due: float) -> dict[str, Any]:
    """A copy of ``message`` that runs as soon as a worker takes it: no ``eta``, and the
    due time kept in ``taskworks_due`` for whoever lists or inspects it. A copy: the
    caller's headers are the ones Celery's ``after_task_publish`` signal reports."""
    headers = {**message["headers"], "eta": None, "taskworks_due": due}
    return {**message, "headers": headers}


def envelope(message: dict[str, Any], queue: str, list_key: str, due: float) -> str:
    headers = message.get("headers") or {}
    return json.dumps({
        "key": list_key, "queue": queue, "id": str(headers.get("id") or ""),
        "name": str(headers.get("task") or ""), "due": due, "message": dumps(message),
    }, separators=(",", ":"))


def _add_args(message: dict[str, Any], queue: str, list_key: str, due: float) -> list[str]:
    ready = unscheduled(message, due)
    tag = str(ready["properties"]["delivery_tag"])
    task_id = str(ready["headers"].get("id") or tag)
    return [tag, repr(due), envelope(ready, queue, list_key, due), task_id, queue]


def add(client: Any, message: dict[str, Any], queue: str, list_key: str, due: float) -> None:
    """Keep ``message`` (bound for ``list_key`` of ``queue``) until ``due``: one script,
    so a message is scheduled whole or not at all."""
    _ADD(keys=_SCHEDULE_KEYS, args=_add_args(message, queue, list_key, due), client=client)


def add_command(message: dict[str, Any], queue: str, list_key: str,
                due: float) -> tuple[Any, ...]:
    """``add`` as one pipeline command (kombu's publish batch): the script itself, since
    a pipeline cannot fall back from EVALSHA when the server does not know it yet."""
    return ("eval", _ADD.script, len(_SCHEDULE_KEYS), *_SCHEDULE_KEYS,
            *_add_args(message, queue, list_key, due))


def move_due(client: redis.Redis, now: float | None = None, budget: int = MOVE_BUDGET,
             wake_tokens: int = 64, undeliverable_max: int = keys.UNDELIVERABLE_MAX,
             ) -> tuple[int, float | None]:
    """Publish what is due by ``now``. Returns (messages moved, next due time or None)."""
    moved, next_due = _MOVE(
        keys=[*_SCHEDULE_KEYS, keys.UNDELIVERABLE],
        args=[repr(time() if now is None else now), budget, keys.WAKE, wake_tokens,
              undeliverable_max],
        client=client)
    return int(moved), (float(next_due) if next_due else None)


def cancel(client: redis.Redis, task_id: str) -> dict[str, Any] | None:
    """Take ``task_id`` out of the schedule. Returns its envelope, None if it is not
    scheduled (never was, due and published already, or cancelled)."""
    raw = _CANCEL(keys=_SCHEDULE_KEYS, args=[task_id], client=client)
    if not raw:
        return None
    decoded: dict[str, Any] = json.loads(raw)
    return decoded


# -- the fence: a periodic entry fires once ------------------------------------------
@dataclass
class Fence:
    """Publish the next message only if ``entry``'s last fire time is still ``last``
    ('' for never), and make it ``new``. ``fired`` tells what happened."""

    entry: str
    last: str
    new: str
    fired: bool | None = None


_FENCE: ContextVar[Fence | None] = ContextVar("taskworks_fence", default=None)


@contextlib.contextmanager
def fenced(entry: str, last: str, new: str) -> Iterator[Fence]:
    """Within this block, the first message published through this transport is fenced
    (see ``Fence``)."""
    fence = Fence(entry, last, new)
    token = _FENCE.set(fence)
    try:
        yield fence
    finally:
        _FENCE.reset(token)


def take_fence() -> Fence | None:
    """The fence the message being published must pass, once."""
    fence = _FENCE.get()
    if fence is None or fence.fired is not None:
        return None
    return fence


def fire(client: Any, fence: Fence, message: dict[str, Any], queue: str, list_key: str,
         wake_tokens: int = 64) -> bool:
    fence.fired = bool(_FIRE(
        keys=[keys.BEAT_LAST_FIRE, list_key],
        args=[fence.entry, fence.last, fence.new, dumps(message), keys.wake(queue),
              wake_tokens],
        client=client))
    return fence.fired


# -- the mover: one thread per process and broker ------------------------------------
class Mover:
    """Publishes due messages: sleeps until the next due time it knows, at most
    MOVE_INTERVAL (another process may schedule something sooner). It runs while one of
    its users (a consuming channel, beat) is alive and has not released it: a thread
    left running after them would keep knocking on a broker nobody uses any more."""

    def __init__(self, client: redis.Redis, interval: float = MOVE_INTERVAL) -> None:
        self.client = client
        self.interval = interval
        self._users: weakref.WeakSet[Any] = weakref.WeakSet()
        self._stop = threading.Event()
        self._pid = os.getpid()
        self._away = False  # the broker could not be reached at the last look
        self._thread = threading.Thread(target=self._run, name="taskworks-schedule-mover",
                                        daemon=True)

    def start(self) -> Mover:
        self._thread.start()
        return self

    def alive(self) -> bool:
        return self._thread.is_alive() and self._pid == os.getpid() and not self._stop.is_set()

    def release(self, user: object) -> None:
        with _movers_lock:
            self._users.discard(user)

    def move(self) -> float:
        """One look; returns the seconds to sleep before the next."""
        try:
            moved, next_due = move_due(self.client)
        except RedisError as exc:  # the broker is away: nothing can be published anyway
            if not self._away:  # once per outage, not every look
                log.debug("schedule not moved until the broker is back", error=str(exc)[:200])
            self._away = True
            return self.interval
        self._away = False
        if moved >= MOVE_BUDGET:
            return 0.0  # more are due: at once
        if next_due is None:
            return self.interval
        return max(0.0, min(self.interval, next_due - time()))

    def _run(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            if os.getpid() != self._pid:
                return
            with _movers_lock:
                if not self._users:  # every user gone: mover_for starts a new one
                    self._stop.set()
                    return
            wait = self.move()

    def stop(self) -> None:
        self._stop.set()


_movers: dict[tuple[Any, ...], Mover] = {}
_movers_lock = threading.Lock()


def _new_lock_in_child() -> None:
    """A child forked while a mover held the lock would wait for it forever."""
    global _movers_lock
    _movers_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def stop_movers() -> None:
    """Stop this process's movers (tests that move by hand; a new take starts one)."""
    with _movers_lock:
        for mover in _movers.values():
            mover.stop()
        _movers.clear()


def mover_for(pool: redis.ConnectionPool, user: object) -> Mover:
    """The process's mover for the broker ``pool`` connects to, used by ``user`` until
    it releases it or is gone (started on first use): one thread and one connection of
    its own per broker and database."""
    kwargs = pool.connection_kwargs
    where = (kwargs.get("host"), kwargs.get("port"), kwargs.get("path"), kwargs.get("db"))
    key = (os.getpid(), where)
    with _movers_lock:
        mover = _movers.get(key)
        fresh = mover is None or not mover.alive()
        if fresh:
            own = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
            mover = _movers[key] = Mover(redis.Redis(connection_pool=own))
        assert mover is not None
        mover._users.add(user)  # under the lock its thread checks them with
        return mover.start() if fresh else mover
