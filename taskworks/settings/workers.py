"""The queue topology taskworks starts with: queues, routes, periodic entries, worker
groups, the defaults of every worker, and the supervisor that scales the groups."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from taskworks.scheduling.entries import BeatEntry
from taskworks.settings.base import Strict

__all__ = ["DEFAULT_BEAT", "DEFAULT_QUEUES", "DEFAULT_ROUTES", "DEFAULT_WORKER_GROUPS",
           "AutoscaleSettings", "WorkerDefaults", "WorkerGroup"]

DEFAULT_QUEUES = ["default", "cpu_intensive", "io_intensive", "priority", "scheduled"]

# The patterns guide's routes: task-name globs to queues.
DEFAULT_ROUTES = {
    "tasks.cpu_intensive.*": "cpu_intensive",
    "tasks.io_intensive.*": "io_intensive",
    "tasks.priority.*": "priority",
    "tasks.scheduled.*": "scheduled",
}

DEFAULT_BEAT = {
    "cleanup-expired-data": BeatEntry(
        task="taskworks.cleanup.expired_data", every=3600, queue="scheduled"
    ),
    "daily-report": BeatEntry(task="taskworks.reports.daily", cron="0 2 * * *", queue="scheduled"),
    "health-check": BeatEntry(
        task="taskworks.monitoring.health_check", every=300, queue="priority", priority=9
    ),
}


class WorkerGroup(Strict):
    """A set of queues served by one kind of worker process."""

    queues: list[str]
    pool: Literal["prefork", "threads", "solo"] = "prefork"
    #: pool slots of each worker process of this group
    concurrency: int = Field(default=2, ge=1, le=256)
    prefetch_multiplier: int = Field(default=1, ge=1, le=1000)
    #: the autoscaler keeps between min_workers and max_workers processes of this group
    min_workers: int = Field(default=1, ge=0, le=256)
    max_workers: int = Field(default=4, ge=1, le=256)
    #: messages (waiting + reserved + running) one worker process is expected to hold;
    #: above it the group scales up
    target_backlog: int = Field(default=20, ge=1)
    #: a queue of this group deeper than 2x this number triggers an emergency scale-up
    queue_threshold: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _min_under_max(self) -> WorkerGroup:
        if self.min_workers > self.max_workers:
            raise ValueError(f"min_workers {self.min_workers} exceeds max_workers "
                             f"{self.max_workers}")
        return self


DEFAULT_WORKER_GROUPS = {
    # short I/O-bound tasks: threads keep many in flight cheaply
    "general": WorkerGroup(queues=["default", "io_intensive", "scheduled"], pool="threads",
                           concurrency=4, prefetch_multiplier=4, max_workers=4,
                           target_backlog=40),
    # long CPU-bound tasks: one process per core, prefetch 1 so a long task never hides others
    "cpu": WorkerGroup(queues=["cpu_intensive"], pool="prefork", concurrency=2, max_workers=2,
                       target_backlog=4),
    # urgent tasks get a worker of their own so a backlog elsewhere never delays them
    "priority": WorkerGroup(queues=["priority"], pool="solo", concurrency=1, max_workers=2,
                            target_backlog=10),
}


class WorkerDefaults(Strict):
    #: a prefork child is replaced after this many tasks
    max_tasks_per_child: int = Field(default=1000, ge=1)
    #: a prefork child whose resident memory passes this (kB) is replaced after its task;
    #: also how a MemoryError's callback asks for its child to be recycled
    max_memory_per_child: int = Field(default=4_000_000, ge=1)
    #: a solo worker past ``max_memory_per_child`` (or ``solo_max_tasks``) shuts itself
    #: down warm after its task and exits 0 (runtime/recycling.py). Off unless something
    #: starts a new process when one exits 0: ``taskworks worker``'s set of solo processes
    #: and ``taskworks up`` turn it on for theirs (systemd's ``Restart=on-failure`` would
    #: leave the worker stopped, Kubernetes would restart it with a growing back-off)
    solo_recycling: bool = False
    #: a recycling solo worker is replaced after this many tasks; None: by memory only. A
    #: new solo process is a whole interpreter start (about 2 s of CPU) where a prefork
    #: child is a fork: every 1,000 tasks it took more than half of a no-op drain's rate
    solo_max_tasks: int | None = Field(default=None, ge=1)
    #: report STARTED to the result backend when a task begins: one more result write
    #: (GET, SET, PUBLISH) per task; the journal records start times either way
    track_started: bool = False
    #: Celery task events (clients' task-sent; workers' task-received, -started,
    #: -succeeded ...) for Flower or ``celery events``. Nothing in taskworks reads them
    #: (the dashboard reads the journal, the queues and inspect); each is a Redis PUBLISH
    #: through a new kombu client, a third of a prefork worker's CPU on short tasks.
    #: Flower can also turn worker events on at run time (``celery control enable_events``)
    task_events: bool = False
    soft_time_limit: float = Field(default=1500, gt=0)
    time_limit: float = Field(default=1800, gt=0)
    default_priority: int = Field(default=5, ge=0, le=9)

    @model_validator(mode="after")
    def _soft_below_hard(self) -> WorkerDefaults:
        if self.soft_time_limit >= self.time_limit:
            raise ValueError(
                f"soft_time_limit ({self.soft_time_limit}) must be below "
                f"time_limit ({self.time_limit})"
            )
        return self


class AutoscaleSettings(Strict):
    """The worker supervisor (scaling/): how often it looks, and the machine's limits."""

    #: seconds between observations
    interval: float = Field(default=2.0, gt=0)
    #: seconds after a scale-up before the same group may scale up again (not emergencies)
    scale_up_cooldown: float = Field(default=5.0, ge=0)
    #: seconds a group must stay under its low-water backlog before one worker is removed
    scale_down_after: float = Field(default=30.0, ge=0)
    #: no scale-up while the machine's CPU use (percent) is above this (100: never held)
    cpu_ceiling: float = Field(default=90.0, gt=0, le=100)
    #: no scale-up while memory use (percent) is above this (the patterns guide's 85 %)
    memory_threshold: float = Field(default=85.0, gt=0, le=100)
    #: worker processes of all groups together never exceed this (None: 4 per core)
    max_total_workers: int | None = Field(default=None, ge=1)
    #: seconds between restarts of a worker that keeps crashing, doubling up to the max
    restart_backoff: float = Field(default=1.0, gt=0)
    restart_backoff_max: float = Field(default=60.0, gt=0)
