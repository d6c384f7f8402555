"""Consumer heartbeats: a SIGKILLed worker's messages back in seconds, not hours.

Kombu gives a dead worker's unacknowledged messages back once they are older than the
visibility timeout (2 h by default), because it cannot tell a dead worker from a slow
one. Here every consumer (a channel of this transport) holds its messages in a set of
its own (consume.lua) and beats in a registry once a second, from a thread of its
process, so a task running in that process never holds the beat back. When a
consumer's beat is older than ``consumer_timeout`` (6 s by default), the next sweep of
any live process moves what it held back to the queue (sweep.lua), exactly once.

A process beats while it is alive, even if a task is stuck: such a task is the time
limit's business, and a message held past the visibility timeout is given back as kombu
would.
"""

from __future__ import annotations

import os
import threading
import weakref
from importlib import resources
from time import time
from typing import Any, Protocol

import redis
from redis.commands.core import Script
from redis.exceptions import RedisError

from taskworks import keys
from taskworks.logs import get_logger

__all__ = ["BEAT_INTERVAL", "CONSUMER_TIMEOUT", "SWEEP_BUDGET", "SWEEP_SCRIPT", "Heartbeat",
           "Holder", "heartbeat_for", "sweep"]

log = get_logger("taskworks.broker")

#: seconds between two beats of a process
BEAT_INTERVAL = 1.0
#: a consumer whose last beat is older than this is dead (transport option
#: ``consumer_timeout``): what it held goes back to its queues
CONSUMER_TIMEOUT = 6.0
#: messages one sweep moves at most (the script runs atomically: a bounded pause)
SWEEP_BUDGET = 500

SWEEP_SCRIPT = (resources.files("taskworks.broker") / "sweep.lua").read_text()
#: redis-py's script runner: EVALSHA, and the script itself after a NOSCRIPT
_SWEEP = Script(None, SWEEP_SCRIPT.encode())  # type: ignore[arg-type]  # each call names its client


class Holder(Protocol):
    """A consumer that beats: a channel of this transport."""

    consumer_id: str

    def flush_acks(self) -> None:
        """Send acknowledgements waiting for the next take (none may wait > 1 beat)."""


def sweep(client: redis.Redis, beating: list[str], *, unacked_key: str = "unacked",
          timeout: float = CONSUMER_TIMEOUT, visibility: float = -1.0,
          budget: int = SWEEP_BUDGET, wake_tokens: int = 64) -> int:
    """Beat for ``beating`` and move back what dead consumers held (and, with a
    ``visibility`` timeout, what live ones held longer). Returns the messages moved."""
    args: list[str | float] = [keys.HELD, keys.WAKE, timeout, visibility, repr(time()), budget,
                               wake_tokens,
            *beating]
    moved, unmarked = _SWEEP(keys=[keys.CONSUMERS, unacked_key], args=args, client=client)
    if moved:
        log.warning("messages of dead or stuck consumers given back to their queues",
                    moved=int(moved))
    if unmarked:
        log.error("messages given back could not be marked redelivered (not kombu's layout)",
                  count=int(unmarked))
    return int(moved)


class Heartbeat:
    """One thread per process and broker: beats for the process's live consumers and
    sweeps for dead ones."""

    def __init__(self, client: redis.Redis, unacked_key: str, timeout: float,
                 interval: float = BEAT_INTERVAL) -> None:
        self.client = client
        self.unacked_key = unacked_key
        self.timeout = timeout
        self.interval = interval
        self._holders: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._away = False  # the broker could not be reached at the last beat

    def add(self, holder: Holder) -> None:
        with self._lock:
            self._holders.add(holder)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="taskworks-heartbeat",
                                                daemon=True)
                self._thread.start()
        self.beat()  # registered before its first message is taken

    def discard(self, holder: Holder) -> None:
        """Stop beating for ``holder``. Whatever it still holds goes back to its queues
        after the timeout; the sweep that finds it holding nothing takes it out of the
        registry (never earlier: a consumer out of the registry is never swept)."""
        with self._lock:
            self._holders.discard(holder)

    def beat(self) -> None:
        with self._lock:
            holders = list(self._holders)
        for holder in holders:
            try:
                holder.flush_acks()
            except RedisError as exc:  # the next take or beat sends them
                log.warning("acknowledgements not sent yet", error=str(exc)[:200])
        try:
            sweep(self.client, [h.consumer_id for h in holders],
                  unacked_key=self.unacked_key, timeout=self.timeout)
        except RedisError as exc:  # the broker is away: beats resume when it is back
            if not self._away:  # once per outage, not every beat
                log.debug("heartbeat not sent until the broker is back", error=str(exc)[:200])
            self._away = True
            return
        self._away = False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if os.getpid() != self._pid:
                return  # a forked child: beating is its parent's business
            with self._lock:
                if not self._holders:  # every channel closed: add() starts a new thread
                    self._thread = None
                    return
            self.beat()

    def stop(self) -> None:
        self._stop.set()


_beats: dict[tuple[Any, ...], Heartbeat] = {}
_beats_lock = threading.Lock()


def _new_lock_in_child() -> None:
    """A child forked while another thread held the lock would wait for it forever."""
    global _beats_lock
    _beats_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def heartbeat_for(pool: redis.ConnectionPool, unacked_key: str, timeout: float) -> Heartbeat:
    """The process's heartbeat for the broker a channel's ``pool`` connects to: one
    thread and one connection of its own per broker, database and key."""
    kwargs = pool.connection_kwargs
    where = (kwargs.get("host"), kwargs.get("port"), kwargs.get("path"), kwargs.get("db"))
    key = (os.getpid(), where, unacked_key, timeout)
    with _beats_lock:
        beat = _beats.get(key)
        if beat is None:
            own = redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
            beat = _beats[key] = Heartbeat(redis.Redis(connection_pool=own), unacked_key,
                                           timeout)
        return beat
