"""A leader lease in Redis, and the beat scheduler that fires entries only while leading.

Any number of beat processes may run (for availability); the one holding the lease
sends due entries, the others wait. A leader that dies loses the lease after
``lease_seconds``, and a follower takes over at its next tick, from the last fire times
the old leader recorded in Redis: it neither repeats a fire nor loses one (firing.py).
"""

from __future__ import annotations

import contextlib
import uuid
from importlib import resources
from typing import Any

import redis
from celery.beat import Scheduler

from taskworks import keys
from taskworks.broker import schedule
from taskworks.broker.urls import redis_client
from taskworks.logs import get_logger
from taskworks.scheduling.entries import CONF_DEFAULT_PRIORITY, Periodic, entries_of
from taskworks.scheduling.firing import PeriodicScheduler
from taskworks.topology import broker_priority

__all__ = ["LeaderLease", "LeaderScheduler"]

log = get_logger("taskworks.beat")


def _script(name: str) -> str:
    return (resources.files("taskworks.scheduling") / name).read_text()


class LeaderLease:
    def __init__(self, client: redis.Redis, key: str, lease_seconds: float) -> None:
        self.client = client
        self.key = key
        self.lease_ms = int(lease_seconds * 1000)
        self.token = uuid.uuid4().hex
        self._acquire = client.register_script(_script("leader.lua"))
        self._release = client.register_script(_script("release.lua"))
        self.leading = False

    def hold(self) -> bool:
        """Acquire or renew the lease; True while this process is the leader."""
        try:
            leading = bool(self._acquire(keys=[self.key], args=[self.token, self.lease_ms]))
        except redis.RedisError as exc:
            # without the broker no entry could be sent anyway; stop leading to be safe
            log.warning("beat leader lease unavailable", error=str(exc))
            leading = False
        if leading != self.leading:
            log.info("beat leadership changed", leading=leading, token=self.token)
        self.leading = leading
        return leading

    def release(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self._release(keys=[self.key], args=[self.token])
        self.leading = False


class LeaderScheduler(Scheduler):  # type: ignore[misc]
    """Celery beat's scheduler, replaced: while this process holds the LeaderLease, a
    PeriodicScheduler fires the app's entries (zones, missed runs, durable last fire:
    firing.py). Celery's own schedule is built but never run."""

    #: how long a lease lasts without renewal; ticks renew it well before that
    lease_seconds = 15.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        client = redis_client(self.app.conf.broker_url)
        self.lease = LeaderLease(client, keys.beat_leader(self.app.main or "default"),
                                 self.lease_seconds)
        # a tick must come soon enough to renew the lease before it expires
        self.max_interval: float = min(float(self.max_interval), self.lease_seconds / 3)
        self.periodic = PeriodicScheduler(client, entries_of(self.app.conf), self.send,
                                          idle=self.max_interval)
        # beat publishes delayed tasks that are due too (broker/schedule.py): with no
        # worker up, what is due waits in its queue, not in the schedule
        self.mover = schedule.mover_for(client.connection_pool, self)

    def send(self, periodic: Periodic) -> None:
        """Publish one fire, as Celery's beat does: a registered task's ``apply_async``
        (taskworks tasks turn a 0-9 priority into the broker's scale there), else
        ``send_task``, where a settings entry's priority is turned here."""
        entry = periodic.entry
        options = dict(periodic.options)
        task = self.app.tasks.get(entry.task)
        if task is not None:
            task.apply_async(entry.args, entry.kwargs, **options)
            return
        if periodic.ours:  # settings entries exist only on apps taskworks built
            chosen = options.get("priority", self.app.conf.get(CONF_DEFAULT_PRIORITY, 5))
            options["priority"] = broker_priority(chosen)
        self.app.send_task(entry.task, entry.args, entry.kwargs, **options)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.lease.hold():
            return float(self.max_interval)
        return min(float(self.max_interval), self.periodic.tick())

    def close(self) -> None:
        self.mover.release(self)
        self.lease.release()
        super().close()
