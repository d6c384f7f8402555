"""Prometheus metrics computed at scrape time from the durable stores.

Why at scrape time: every worker process already journals each attempt (name, outcome,
duration) to the SQL store, in batches. Counting the journal when Prometheus scrapes
gives the same numbers from any process, aggregated over every worker process, machine
and restart, with no per-process registry, no multiprocess directory and no extra write
on the task's hot path. The rest is read live: queue depth from the broker (waiting +
unacked), scheduled tasks and the mover's lag from the durable schedule, breaker state
from Redis, dead letters, workflow runs, map-reduce jobs and datasets from the store,
workers from a Celery ping (cached a few seconds, so frequent scrapes cost no waiting).

Caveats, by design: the journal's retention deletes old rows, so a task counter can go
down; Prometheus' ``rate()``/``increase()`` treat that as a counter reset. Journal rows are
written in batches (``journal.flush_interval``), so counters lag by about that long.

Each part is read on its own: one that fails (the store is down) is reported in
``taskworks_scrape_errors{part}`` and the others are still exposed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import case, func, select

from taskworks.logs import get_logger
from taskworks.monitoring.queues import queue_depths
from taskworks.resilience.breaker import BreakerState
from taskworks.resilience.breaker_registry import Breakers
from taskworks.runtime.journal.states import JournalState
from taskworks.scaling.record import current_status
from taskworks.scaling.replicas import desired_replicas
from taskworks.scheduling.delayed import summary_of
from taskworks.settings import Settings
from taskworks.store.engine import Store
from taskworks.store.tables import (
    Dataset,
    DeadLetter,
    JournalEntry,
    MapReduceJob,
    WorkflowRun,
)

__all__ = ["DATASET_STATES", "DURATION_BUCKETS", "FAMILIES", "JOB_STATES", "JOB_WORKFLOW_PREFIX",
           "OUTCOMES", "Ping", "TaskworksCollector", "registry_for"]

log = get_logger("taskworks.metrics")

#: seconds; covers sub-millisecond bodies to the default 30-minute time limit
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0, 900.0, 1800.0)
#: a map-reduce job's state is its workflow run's, named as tw.jobs names it
JOB_STATES = {"RUNNING": "running", "SUCCEEDED": "completed", "FAILED": "failed",
              "CANCELLED": "cancelled"}
#: a dataset is ready, or building while a job writes its output into it
DATASET_STATES = ("ready", "building")
#: the workflows map-reduce generates, one per job: counted by taskworks_jobs instead,
#: since a label per job id would grow the series without bound
JOB_WORKFLOW_PREFIX = "mapreduce."
#: journal states that end a task's attempt (expired included: never run, never lost);
#: a retry is counted apart and ``scheduled`` not at all: the task goes on
OUTCOMES = tuple(state for state in JournalState
                 if state not in (JournalState.RETRY, JournalState.SCHEDULED))

FAMILIES = (
    "taskworks_queue_depth", "taskworks_tasks", "taskworks_task_retries",
    "taskworks_task_duration_seconds", "taskworks_dead_letters",
    "taskworks_dead_letters_by_task", "taskworks_breaker_state",
    "taskworks_breaker_failures", "taskworks_workflow_runs", "taskworks_jobs",
    "taskworks_datasets", "taskworks_workers",
    "taskworks_autoscale_workers", "taskworks_autoscale_desired_replicas",
    "taskworks_scheduled_tasks", "taskworks_scheduled_oldest_due_seconds",
    "taskworks_schedule_mover_lag_seconds", "taskworks_scrape_errors",
)


#: asks every worker to answer (Celery's ``app.control.ping``): one reply per worker
Ping = Callable[..., list[Any] | None]


class TaskworksCollector(Collector):
    """Reads ``store``, the broker's Redis (``client``), the circuit ``breakers``, the
    queues ``queue_names()`` lists and the workers ``ping`` reaches."""

    def __init__(self, store: Store, client: redis.Redis, settings: Settings,
                 breakers: Breakers, queue_names: Callable[[], list[str]], ping: Ping, *,
                 ping_timeout: float = 0.5, workers_ttl: float = 5.0) -> None:
        self.store = store
        self.client = client
        self.settings = settings
        self.breakers = breakers
        self.queue_names = queue_names
        self.ping = ping
        self.ping_timeout = ping_timeout
        self.workers_ttl = workers_ttl
        self._workers: tuple[float, int] | None = None
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        return []  # collected on demand only: registering must not read the stores

    def collect(self) -> Iterator[Metric]:
        errors = GaugeMetricFamily("taskworks_scrape_errors",
                                   "1 when a part of this scrape could not be read",
                                   labels=["part"])
        parts: list[tuple[str, Callable[[], list[Metric]]]] = [
            ("queues", self._queues), ("tasks", self._tasks), ("durations", self._durations),
            ("dead_letters", self._dead_letters), ("breakers", self._breakers),
            ("workflows", self._workflows), ("jobs", self._jobs),
            ("datasets", self._datasets), ("workers", self._workers_metric),
            ("autoscale", self._autoscale), ("schedule", self._schedule),
        ]
        for part, read in parts:
            try:
                found = read()
            except Exception as exc:  # one part down must not take /metrics down
                log.warning("metrics part failed", part=part, error=f"{type(exc).__name__}: "
                            f"{exc}")
                errors.add_metric([part], 1)
                continue
            errors.add_metric([part], 0)
            yield from found
        yield errors

    # -- the parts ----------------------------------------------------------------------
    def _queues(self) -> list[Metric]:
        depth = GaugeMetricFamily(
            "taskworks_queue_depth", "messages per queue: waiting in the queue, or reserved "
            "by a worker and not yet acknowledged (unacked)", labels=["queue", "state"])
        for name, d in queue_depths(self.client, self.queue_names()).items():
            depth.add_metric([name, "waiting"], d.waiting)
            depth.add_metric([name, "unacked"], d.unacked)
        return [depth]

    def _tasks(self) -> list[Metric]:
        tasks = CounterMetricFamily("taskworks_tasks", "tasks ended, by name and outcome "
                                    "(from the journal: every worker process)",
                                    labels=["task", "outcome"])
        retries = CounterMetricFamily("taskworks_task_retries", "retries scheduled, by task",
                                      labels=["task"])
        stmt = select(JournalEntry.name, JournalEntry.state, func.count()).group_by(
            JournalEntry.name, JournalEntry.state)
        with self.store.session() as session:
            for name, state, count in session.execute(stmt):
                if state == JournalState.RETRY:
                    retries.add_metric([name], int(count))
                elif state in OUTCOMES:
                    tasks.add_metric([name, state], int(count))
        return [tasks, retries]

    def _durations(self) -> list[Metric]:
        hist = HistogramMetricFamily("taskworks_task_duration_seconds",
                                     "run time of every journaled attempt", labels=["task"])
        ms = JournalEntry.duration_ms
        columns = [func.sum(case((ms <= b * 1000, 1), else_=0)) for b in DURATION_BUCKETS]
        stmt = (select(JournalEntry.name, func.count(), func.sum(ms), *columns)
                .where(ms.is_not(None)).group_by(JournalEntry.name))
        with self.store.session() as session:
            for name, count, total_ms, *cumulative in session.execute(stmt):
                buckets = [(str(b), int(n or 0)) for b, n in zip(DURATION_BUCKETS, cumulative,
                                                                 strict=True)]
                buckets.append(("+Inf", int(count)))
                hist.add_metric([name], buckets, sum_value=float(total_ms or 0) / 1000)
        return [hist]

    def _dead_letters(self) -> list[Metric]:
        total = GaugeMetricFamily("taskworks_dead_letters", "tasks in the dead-letter store")
        by_task = GaugeMetricFamily("taskworks_dead_letters_by_task",
                                    "tasks in the dead-letter store, by task", labels=["task"])
        stmt = select(DeadLetter.name, func.count()).group_by(DeadLetter.name)
        with self.store.session() as session:
            rows = [(name, int(n)) for name, n in session.execute(stmt)]
        for name, n in rows:
            by_task.add_metric([name], n)
        total.add_metric([], sum(n for _, n in rows))
        return [total, by_task]

    def _breakers(self) -> list[Metric]:
        state = GaugeMetricFamily("taskworks_breaker_state",
                                  "1 for the state each circuit breaker is in",
                                  labels=["breaker", "state"])
        failures = CounterMetricFamily("taskworks_breaker_failures",
                                       "failures each breaker counted", labels=["breaker"])
        for b in self.breakers.list():
            for s in BreakerState:
                state.add_metric([b.name, s.value], 1 if b.state is s else 0)
            failures.add_metric([b.name], b.failures_total)
        return [state, failures]

    def _workflows(self) -> list[Metric]:
        runs = GaugeMetricFamily("taskworks_workflow_runs", "workflow runs kept in the store, "
                                 "by workflow and state", labels=["workflow", "state"])
        stmt = (select(WorkflowRun.workflow, WorkflowRun.state, func.count())
                .where(WorkflowRun.workflow.not_like(f"{JOB_WORKFLOW_PREFIX}%"))
                .group_by(WorkflowRun.workflow, WorkflowRun.state))
        with self.store.session() as session:
            for workflow, run_state, n in session.execute(stmt):
                runs.add_metric([workflow, run_state], int(n))
        return [runs]

    def _jobs(self) -> list[Metric]:
        jobs = GaugeMetricFamily("taskworks_jobs", "map-reduce jobs kept in the store, by "
                                 "state (running, completed, failed, cancelled)",
                                 labels=["state"])
        stmt = (select(WorkflowRun.state, func.count())
                .join(MapReduceJob, MapReduceJob.id == WorkflowRun.id)
                .group_by(WorkflowRun.state))
        with self.store.session() as session:
            counts = {JOB_STATES.get(state, state.lower()): int(n)
                      for state, n in session.execute(stmt)}
        for state in sorted({*JOB_STATES.values(), *counts}):
            jobs.add_metric([state], counts.get(state, 0))
        return [jobs]

    def _datasets(self) -> list[Metric]:
        datasets = GaugeMetricFamily("taskworks_datasets", "datasets in the store, by state",
                                     labels=["state"])
        stmt = select(Dataset.state, func.count()).group_by(Dataset.state)
        with self.store.session() as session:
            counts = {state: int(n) for state, n in session.execute(stmt)}
        for state in sorted({*DATASET_STATES, *counts}):
            datasets.add_metric([state], counts.get(state, 0))
        return [datasets]

    def _workers_metric(self) -> list[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._workers is None or now - self._workers[0] > self.workers_ttl:
                replies = self.ping(timeout=self.ping_timeout) or []
                self._workers = (now, len(replies))
            count = self._workers[1]
        workers = GaugeMetricFamily("taskworks_workers", "workers answering a ping")
        workers.add_metric([], count)
        return [workers]

    def _autoscale(self) -> list[Metric]:
        live = GaugeMetricFamily("taskworks_autoscale_workers",
                                 "worker processes the supervisor runs, by group and state",
                                 labels=["group", "state"])
        desired = GaugeMetricFamily("taskworks_autoscale_desired_replicas",
                                    "workers each group should have now (the KEDA number)",
                                    labels=["group"])
        status: dict[str, Any] = current_status(self.client) or {}
        for group, info in (status.get("groups") or {}).items():
            live.add_metric([group, "active"], int(info.get("active") or 0))
            live.add_metric([group, "draining"], int(info.get("draining") or 0))
        for group, found in desired_replicas(self.settings, self.client).items():
            desired.add_metric([group], found["desired"])
        return [live, desired]

    def _schedule(self) -> list[Metric]:
        now = time.time()
        found = summary_of(self.client, now)
        tasks = GaugeMetricFamily("taskworks_scheduled_tasks", "delayed tasks the durable "
                                  "schedule keeps until due, by queue", labels=["queue"])
        for queue in sorted({*self.queue_names(), *found.by_queue}):
            tasks.add_metric([queue], found.by_queue.get(queue, 0))
        oldest = GaugeMetricFamily(
            "taskworks_scheduled_oldest_due_seconds", "seconds until the earliest scheduled "
            "task is due, negative when it is overdue; no sample when none is scheduled")
        if found.next_due is not None:
            oldest.add_metric([], found.next_due.timestamp() - now)
        lag = GaugeMetricFamily("taskworks_schedule_mover_lag_seconds", "how late the most "
                                "overdue scheduled task is (the mover is that far behind); "
                                "0 when none is overdue")
        lag.add_metric([], found.mover_lag)
        return [tasks, oldest, lag]


def registry_for(store: Store, client: redis.Redis, settings: Settings, breakers: Breakers,
                 queue_names: Callable[[], list[str]], ping: Ping) -> CollectorRegistry:
    """A registry of its own (not the process-global one) holding the collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TaskworksCollector(store, client, settings, breakers, queue_names, ping))
    return registry
