"""The worker supervisor: starts, drains and restarts real ``celery worker`` processes.

Each worker group gets between ``min_workers`` and ``max_workers`` processes, each one a
``taskworks worker --group G`` with the group's pool and concurrency (solo or threads
processes for short tasks, prefork for cpu_intensive). Every ``interval`` the supervisor
observes (queue depths with reserved messages, CPU, memory, live workers), asks the pure
policy (policy.py) for the desired counts, and reconciles:

- scale up: start processes;
- scale down: SIGTERM the newest process of the group. That is Celery's warm shutdown:
  the worker stops consuming, finishes the tasks it runs, and exits; messages it had
  prefetched but not started are unacknowledged and go back to the queue when its
  connection closes. No task is ever killed;
- a process that exits 0 without being asked recycled itself (a solo worker past
  ``worker.max_memory_per_child`` or ``solo_max_tasks``, runtime/recycling.py): a new
  one starts at the next reconcile;
- a process that exits otherwise crashed: it is restarted after a backoff that doubles
  with each crash in a row (``restart_backoff`` .. ``restart_backoff_max``; the rule is
  scaling/restarts.py, shared with ``taskworks worker``'s set).

Every change is recorded (store and log) with its observations and reason (record.py).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from taskworks.broker.urls import redis_client
from taskworks.logs import get_logger
from taskworks.monitoring.queues import queue_depths
from taskworks.runtime.recycling import SOLO_RECYCLING_ENV
from taskworks.scaling.policy import (
    Decision,
    GroupObservation,
    GroupState,
    Observations,
    decide,
)
from taskworks.scaling.restarts import RECYCLED, STEADY_AFTER, crash_backoff
from taskworks.settings import Settings

__all__ = ["GroupHealth", "Supervisor", "WorkerSlot"]

log = get_logger("taskworks.autoscale")


@dataclass
class WorkerSlot:
    group: str
    hostname: str
    proc: subprocess.Popen[bytes]
    started_at: float
    draining: bool = False

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class GroupHealth:
    crashes_in_a_row: int = 0
    restarts: int = 0
    restart_at: float | None = None


@dataclass
class Supervisor:
    settings: Settings
    #: module:attribute of the Taskworks app the workers load (TASKWORKS_APP)
    app_spec: str | None = None
    log_dir: Path | None = None
    #: called with every decision that changed something (record.py writes it down)
    on_change: Callable[[Decision, Observations], None] | None = None
    #: called after every tick with the current status (record.py publishes it)
    on_status: Callable[[dict[str, Any]], None] | None = None
    #: extra environment for the workers
    env: dict[str, str] = field(default_factory=dict)
    slots: list[WorkerSlot] = field(default_factory=list)
    health: dict[str, GroupHealth] = field(default_factory=dict)
    state: dict[str, GroupState] = field(default_factory=dict)
    dead: int = 0
    last_decision: Decision | None = None
    last_observations: Observations | None = None
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _client: redis.Redis | None = None

    # -- observing ------------------------------------------------------------------
    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis_client(self.settings.effective_broker_url, socket_timeout=5)
        return self._client

    def observe(self) -> Observations:
        queues = {q for g in self.settings.worker_groups.values() for q in g.queues}
        depths = queue_depths(self.client, sorted(queues))
        groups = {
            name: GroupObservation(
                {q: depths[q].backlog for q in group.queues},
                sum(1 for s in self.live(name)),
            )
            for name, group in self.settings.worker_groups.items()
        }
        return Observations(time.monotonic(), psutil.cpu_percent(interval=None),
                            psutil.virtual_memory().percent, groups)

    def live(self, group: str | None = None) -> list[WorkerSlot]:
        return [s for s in self.slots
                if s.alive and not s.draining and (group is None or s.group == group)]

    # -- acting ---------------------------------------------------------------------
    def start(self) -> None:
        """Start every group at its minimum (and prime the CPU meter)."""
        psutil.cpu_percent(interval=None)
        for name, group in self.settings.worker_groups.items():
            self.health.setdefault(name, GroupHealth())
            self.state[name] = GroupState(desired=group.min_workers)
            for _ in range(group.min_workers):
                self._spawn(name)

    def tick(self) -> Decision:
        self.reap()
        obs = self.observe()
        decision = decide(obs, self.settings.worker_groups, self.settings.autoscale,
                          self.state)
        self.state = dict(decision.state)
        self.last_decision, self.last_observations = decision, obs
        for change in decision.changes:
            log.info("autoscale decision", group=change.group, previous=change.previous,
                     desired=change.desired, backlog=change.backlog, reason=change.reason,
                     cpu=obs.cpu_percent, memory=obs.memory_percent)
        if decision.changes and self.on_change is not None:
            self.on_change(decision, obs)
        self.reconcile()
        if self.on_status is not None:
            self.on_status(self.status())
        return decision

    def reconcile(self) -> None:
        now = time.monotonic()
        for name, state in self.state.items():
            live = self.live(name)
            health = self.health.setdefault(name, GroupHealth())
            if len(live) < state.desired:
                if health.restart_at is not None and now < health.restart_at:
                    continue  # a crashed worker waits for its backoff
                health.restart_at = None
                for _ in range(state.desired - len(live)):
                    self._spawn(name)
            elif len(live) > state.desired:
                for slot in sorted(live, key=lambda s: s.started_at)[state.desired:]:
                    self._drain(slot)

    def _spawn(self, group: str) -> WorkerSlot:
        hostname = f"{group}-{next(self._seq)}@%h"
        argv = [sys.executable, "-m", "taskworks", "worker", "--group", group,
                "--hostname", hostname]
        # solo workers recycle themselves only where someone starts the next one: here
        # (an explicit setting in the environment is kept)
        env = {SOLO_RECYCLING_ENV: "true", **os.environ, **self.env}
        if self.app_spec:
            env["TASKWORKS_APP"] = self.app_spec
        output = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = (self.log_dir / f"worker-{hostname.split('@')[0]}.log").open("ab")
        proc = subprocess.Popen(argv, env=env, start_new_session=True, stdout=output,
                                stderr=output)
        if output is not None:
            output.close()  # the child holds its own descriptor
        slot = WorkerSlot(group, hostname, proc, time.monotonic())
        self.slots.append(slot)
        log.info("worker started", group=group, hostname=hostname, pid=proc.pid)
        return slot

    def _drain(self, slot: WorkerSlot) -> None:
        """Warm shutdown: stop consuming, finish what runs, exit."""
        slot.draining = True
        with contextlib.suppress(ProcessLookupError):
            slot.proc.send_signal(signal.SIGTERM)
        log.info("worker draining", group=slot.group, hostname=slot.hostname,
                 pid=slot.proc.pid)

    def reap(self) -> None:
        """Forget exited workers. One that exited 0 unasked recycled itself: the next
        reconcile replaces it. Any other crashed: back off, restart."""
        now = time.monotonic()
        for slot in [s for s in self.slots if not s.alive]:
            self.slots.remove(slot)
            health = self.health.setdefault(slot.group, GroupHealth())
            if slot.draining:
                log.info("worker drained", group=slot.group, hostname=slot.hostname,
                         returncode=slot.proc.returncode)
                continue
            if slot.proc.returncode == RECYCLED:
                log.info("worker recycled itself; starting a new one", group=slot.group,
                         hostname=slot.hostname, pid=slot.proc.pid)
                continue
            self.dead += 1
            health.crashes_in_a_row += 1
            health.restarts += 1
            backoff = crash_backoff(self.settings.autoscale, health.crashes_in_a_row)
            health.restart_at = now + backoff
            log.error("worker crashed; restarting after backoff", group=slot.group,
                      hostname=slot.hostname, returncode=slot.proc.returncode,
                      backoff=backoff)
        for name, health in self.health.items():
            # a worker up for a minute ends a crash streak
            if health.crashes_in_a_row and all(now - s.started_at > STEADY_AFTER
                                               for s in self.live(name)):
                health.crashes_in_a_row = 0

    def stop(self, timeout: float = 60.0) -> None:
        """Warm-stop every worker; kill only what outlives ``timeout``."""
        for slot in self.slots:
            if slot.alive:
                self._drain(slot)
        deadline = time.monotonic() + timeout
        for slot in self.slots:
            try:
                slot.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker did not stop in time, killing", hostname=slot.hostname)
                slot.proc.kill()
                slot.proc.wait()
        self.slots.clear()
        if self._client is not None:
            self._client.close()

    def run(self, stop: threading.Event) -> None:
        """Start the groups, then observe and reconcile until ``stop`` is set."""
        self.start()
        self.loop(stop)

    def loop(self, stop: threading.Event) -> None:
        """Observe and reconcile every interval until ``stop`` is set (after ``start``)."""
        while not stop.wait(self.settings.autoscale.interval):
            try:
                self.tick()
            except Exception as exc:
                # a bad tick (the broker restarting, the store busy) must not end the
                # loop: the workers it supervises keep running either way
                log.warning("autoscale tick failed", error=f"{type(exc).__name__}: {exc}")

    # -- reporting ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The patterns guide's worker stats, per group and in total."""
        obs, decision = self.last_observations, self.last_decision
        groups: dict[str, Any] = {}
        for name in self.settings.worker_groups:
            slots = [s for s in self.slots if s.group == name]
            groups[name] = {
                "desired": self.state[name].desired if name in self.state else None,
                "active": sum(1 for s in slots if s.alive and not s.draining),
                "draining": sum(1 for s in slots if s.alive and s.draining),
                "restarts": self.health.get(name, GroupHealth()).restarts,
                "backlog": obs.groups[name].backlog_by_queue if obs else {},
                "reason": decision.groups[name].reason if decision else "starting",
                "workers": [{"hostname": s.hostname, "pid": s.proc.pid,
                             "draining": s.draining} for s in slots if s.alive],
            }
        return {
            "at": time.time(),
            "total": sum(1 for s in self.slots if s.alive),
            "active": len(self.live()),
            "dead": self.dead,
            "cpu_percent": obs.cpu_percent if obs else None,
            "memory_percent": obs.memory_percent if obs else None,
            "groups": groups,
        }
