"""Scheduling: how late due tasks start while many are scheduled (issue 18).

Each side's workers first take ``scheduled - due`` tasks due a day later (they stay
scheduled for the whole run), then ``due`` tasks due evenly over a window at
``DUE_RATE`` a second, far under either side's drain rate on two cores, so that the
lateness measures scheduling, not a backlog. Every run of a task appends its index and
``time.time() - due`` at the start of its body to a Redis list; the first run of each
gives its lateness, the others are duplicates.

taskworks keeps every delayed message in its durable schedule (broker/schedule.py) and
publishes it when due. Celery's Redis transport delivers it at once and the worker
holds it until due: once it has been held longer than ``visibility_timeout``, kombu's
sweep gives it back to the queue and a worker takes it again (kombu #337, celery
#4400). Both sides get the same short visibility timeout (a third of the window) and
the sweep taskworks derives from it (``topology.celery_config``): kombu's own sweep runs
every 100 s, longer than a small run, and its 1-hour default timeout would show no
redelivery in a bench of minutes.

Both sides run one prefork worker of two processes. Tasks are sent one at a time with
each side's own API (``tw.submit(eta=...)``, ``apply_async(eta=...)``), not timed; the
due ones are sent once the far ones are all in place (for Celery: none left in the
queue, all held by the worker), with a lead long enough to send them all before the
first is due. One run per side: a full-size run takes minutes.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import redis
from celery import Celery

from bench.core import (
    DONE_KEY,
    BenchEnv,
    Column,
    Figure,
    Ratio,
    Scenario,
    Sizes,
    percentile,
    register,
    wait_for_count,
)
from bench.procs import Workers, bin_path, python
from bench.scenarios._common import selected, with_workers
from taskworks import Taskworks, keys, topology
from taskworks.settings import load_settings

#: every run of a task appends "<index> <lateness s>" here
RUNS_KEY = "bench:sched:runs"
#: seconds of window per scheduled task: 300 s at 100,000 (full), 30 s at 10,000 (small)
WINDOW_PER_TASK = 0.003
MIN_WINDOW = 1.0
#: tasks coming due per second of the window (the sides drain 500-700 no-op tasks/s)
DUE_RATE = 100
#: the tasks that never come due during the run are due this much later
FAR = 86_400.0
#: the workers' Celery app reads the visibility timeout from here
VISIBILITY_ENV = "BENCH_SCHED_VISIBILITY"
#: immediate tasks that show the workers are up and consuming
READY_TASKS = 4
TASK = "bench.late"


@dataclass(frozen=True)
class Plan:
    scheduled: int
    #: seconds over which the ``due`` measured tasks come due
    window: float
    due: int
    visibility: int
    #: seconds after the last due time before counting (late duplicates still arrive)
    grace: float

    @classmethod
    def of(cls, sizes: Sizes) -> Plan:
        n = sizes.scheduled_tasks
        window = max(MIN_WINDOW, n * WINDOW_PER_TASK)
        # a third of the window: the last tasks due are held past it about three times,
        # as a 3-hour countdown would be under Celery's 1-hour default
        visibility = max(2, round(window / 3))
        return cls(n, window, min(n, round(DUE_RATE * window)), visibility,
                   grace=min(15.0, max(0.5, visibility / 2)))


# -- the task and the workers' apps ----------------------------------------------------
_client: tuple[int, redis.Redis] | None = None


def record_start(index: int, due: float) -> None:
    late = time.time() - due  # first: the start of the body is the start measured
    global _client
    if _client is None or _client[0] != os.getpid():  # one connection per (forked) process
        _client = (os.getpid(), redis.Redis.from_url(os.environ["BENCH_BROKER_URL"]))
    pipe = _client[1].pipeline(transaction=False)
    pipe.rpush(RUNS_KEY, f"{index} {late!r}")
    pipe.incr(DONE_KEY)
    pipe.execute()


def build_taskworks(**overrides: Any) -> Taskworks:
    tw = Taskworks(settings=load_settings(**overrides)) if overrides else Taskworks()
    tw.task(name=TASK)(record_start)
    return tw


def transport_options(visibility: int) -> dict[str, Any]:
    """What taskworks sets for ``visibility`` (topology.celery_config): the timeout, and
    a sweep every few seconds instead of kombu's 100, so both sides redeliver alike."""
    return {"visibility_timeout": visibility,
            "unacked_restore_interval": topology.restore_interval(visibility),
            "unacked_restore_throttle": 1}


def build_celery(url: str, visibility: int) -> Celery:
    app = Celery("scheduling", broker=url, backend=url, set_as_current=False)
    app.conf.broker_transport_options = transport_options(visibility)
    app.task(name=TASK, shared=False)(record_start)
    return app


_apps: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    # the workers' apps (`--app bench.scenarios.scheduling:tw`), built from their
    # environment on first use: importing this module for its scenario builds nothing
    if name not in ("tw", "celery_app"):
        raise AttributeError(name)
    if name not in _apps:
        _apps[name] = build_taskworks() if name == "tw" else build_celery(
            os.environ["BENCH_BROKER_URL"], int(os.environ[VISIBILITY_ENV]))
    return _apps[name]


# -- the sides --------------------------------------------------------------------------
class SchedulingSide(Protocol):
    name: str

    def start(self, env: BenchEnv) -> Workers: ...

    def send(self, index: int, due: float | None) -> None:
        """One task due at ``due`` (epoch seconds), or now when None."""

    def absorbed(self, env: BenchEnv, sent: int) -> bool:
        """Whether the ``sent`` delayed tasks are where this side keeps them until due."""


def _eta(due: float) -> datetime:
    return datetime.fromtimestamp(due, UTC)


class TaskworksScheduling:
    name = "taskworks"

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._client: Taskworks | None = None

    def start(self, env: BenchEnv) -> Workers:
        from bench.sides.tw_app import PREFORK
        from taskworks.store.migrate import upgrade

        client = build_taskworks(broker_url=env.url, data_dir=env.dir / "data",
                                 database_url=f"sqlite:///{env.dir / 'taskworks.db'}",
                                 visibility_timeout=self.plan.visibility)
        upgrade(client.store)  # the journal's tables
        self._client = client
        argv = python("-m", "taskworks", "worker", "--app", "bench.scenarios.scheduling:tw",
                      *PREFORK)
        return Workers(self.name, [argv], env.worker_env(
            TASKWORKS_VISIBILITY_TIMEOUT=str(self.plan.visibility)))

    def send(self, index: int, due: float | None) -> None:
        assert self._client is not None, "start() first"
        if due is None:
            self._client.submit(TASK, [index, time.time()])
        else:
            self._client.submit(TASK, [index, due], eta=_eta(due))

    def absorbed(self, env: BenchEnv, sent: int) -> bool:
        return int(env.redis.zcard(keys.SCHEDULE)) >= sent


class CeleryScheduling:
    name = "Celery defaults"

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self._app: Celery | None = None

    def start(self, env: BenchEnv) -> Workers:
        self._app = build_celery(env.url, self.plan.visibility)
        argv = [bin_path("celery"), "-A", "bench.scenarios.scheduling:celery_app", "worker",
                "--loglevel", "WARNING", "--concurrency", "2"]
        return Workers(self.name, [argv], env.worker_env(
            **{VISIBILITY_ENV: str(self.plan.visibility)}))

    def send(self, index: int, due: float | None) -> None:
        assert self._app is not None, "start() first"
        task = self._app.tasks[TASK]
        if due is None:
            task.apply_async(args=[index, time.time()])
        else:
            task.apply_async(args=[index, due], eta=_eta(due))

    def absorbed(self, env: BenchEnv, sent: int) -> bool:
        return int(env.redis.llen("celery")) == 0  # all taken by the worker, held


# -- the measurement -------------------------------------------------------------------
def wait_until(workers: Workers, done: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        workers.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{workers.name}: {what} not after {timeout:.0f} s")
        time.sleep(0.05)


def measure(env: BenchEnv, side: SchedulingSide, workers: Workers,
            plan: Plan) -> dict[str, float]:
    from bench.scenarios.backlog import used_memory, worker_rss

    for _ in range(READY_TASKS):
        side.send(-1, None)
    wait_for_count(env, DONE_KEY, READY_TASKS, timeout=120, polls={}, interval=0.05)
    env.redis.delete(RUNS_KEY)
    env.redis.set(DONE_KEY, 0)
    rss_before, memory_before = worker_rss(workers), used_memory(env)
    cpu_before = workers.cpu_seconds()

    far = plan.scheduled - plan.due
    later = time.time() + FAR
    t0 = time.perf_counter()
    for i in range(far):
        side.send(plan.due + i, later + i * 0.001)
    rate = far / max(1e-3, time.perf_counter() - t0) if far else 500.0
    wait_until(workers, lambda: side.absorbed(env, far), 60 + plan.scheduled / 100,
               f"the {far:,} far tasks in place")

    # twice the time sending them should take: the first is due after the last is sent
    base = time.time() + 0.5 + 2 * plan.due / rate
    step = plan.window / plan.due
    for i in range(plan.due):
        side.send(i, base + i * step)
    if time.time() > base:
        print(f"[bench]   {side.name}: sending the due tasks overran the first due time "
              f"by {time.time() - base:.2f} s", flush=True)
    memory_per_task = (used_memory(env) - memory_before) / plan.scheduled

    end = base + plan.window + plan.grace
    while time.time() < end:
        workers.check_alive()
        time.sleep(max(0.0, min(0.5, end - time.time())))
    rss_after, cpu = worker_rss(workers), workers.cpu_seconds() - cpu_before

    runs: Counter[int] = Counter()
    first: dict[int, float] = {}
    for raw in env.redis.lrange(RUNS_KEY, 0, -1):
        index_text, late_text = (raw.decode() if isinstance(raw, bytes) else raw).split()
        index, late = int(index_text), float(late_text)
        runs[index] += 1
        first[index] = min(late, first.get(index, late))
    lateness = [first[i] * 1000 for i in range(plan.due) if i in first]
    if not lateness:
        raise RuntimeError(f"{side.name}: none of the {plan.due:,} due tasks ran")
    return {
        "scheduled": plan.scheduled, "due": plan.due,
        "late_p50": percentile(lateness, 50), "late_p99": percentile(lateness, 99),
        "late_max": max(lateness),
        "once": sum(1 for i in range(plan.due) if runs[i] == 1),
        "duplicated": sum(1 for i in range(plan.due) if runs[i] > 1),
        "extra_runs": sum(max(0, runs[i] - 1) for i in range(plan.due)),
        "never": plan.due - len(lateness),
        # a task due a day later that ran: no side should have one
        "far_ran": sum(n for i, n in runs.items() if i >= plan.due),
        "rss_growth": rss_after - rss_before, "cpu": cpu,
        "memory_per_task": memory_per_task,
    }


def run(env: BenchEnv, sizes: Sizes) -> list[Figure]:
    plan = Plan.of(sizes)
    sides: list[SchedulingSide] = selected([TaskworksScheduling(plan), CeleryScheduling(plan)])
    note = (f"{plan.scheduled:,} scheduled, {plan.due:,} due over {plan.window:g} s, "
            f"visibility_timeout {plan.visibility} s")
    figures = []
    for side in sides:
        figure = Figure("scheduling", side.name, note=note)

        def body(workers: Workers, side: SchedulingSide = side,
                 figure: Figure = figure) -> None:
            figure.add(**measure(env, side, workers, plan))

        with_workers(env, side, body)
        figures.append(figure)
    return figures


def _measures() -> str:
    return (
        "Lateness of due tasks while many are scheduled: each side's worker (prefork, "
        "2 processes) is given `scheduled_tasks` delayed tasks (100,000 at full size, "
        "10,000 small, 200 tiny), sent one at a time with the side's own API "
        "(`tw.submit(eta=...)`, `apply_async(eta=...)`). 100 a second come due over a "
        "window of 0.003 s per scheduled task (300 s at full size: 30,000 tasks; 30 s "
        "small: 3,000; 1 s tiny: 100); the rest are due a day later and stay scheduled, "
        "sent first: the due ones are sent once those are in place (for Celery: taken "
        "and held by the worker). Each run of a task records `time.time() - due` at the "
        "start of its body; lateness is each due task's first run, in ms; run more than "
        "once: due tasks run twice or more; never run: due tasks not run by the last "
        "due time plus half the visibility timeout (0.5-15 s). Both sides have the same "
        "visibility timeout, a third of the window (100 s full, 10 s small), and the "
        "sweep taskworks derives from it (every `min(10, timeout // 3)` s, instead of "
        "kombu's 100): Celery's defaults otherwise, its worker holding each delayed "
        "message from delivery until due and taking it again once held past the "
        "timeout; taskworks keeps them in its durable schedule. Worker RSS growth and "
        "CPU: every process of the worker, from before the first task is sent to the "
        "end. Valkey bytes per scheduled task: `used_memory` once all are sent, less "
        "before, over the tasks scheduled (for Celery, the copy kombu keeps of each "
        "message a worker holds). One run per side.")


register(Scenario(
    name="scheduling",
    title="Scheduling: lateness with many tasks scheduled (issue 18)",
    measures=_measures(),
    columns=[Column("scheduled", "scheduled"), Column("due", "due in the window"),
             Column("late_p50", "late p50 ms", "{:,.1f}"),
             Column("late_p99", "late p99 ms", "{:,.1f}"),
             Column("late_max", "late max ms", "{:,.1f}"),
             Column("duplicated", "run more than once"),
             Column("once", "run exactly once"),
             Column("never", "never run"),
             Column("rss_growth", "worker RSS growth MiB", "{:.1f}"),
             Column("cpu", "worker CPU s", "{:.1f}"),
             Column("memory_per_task", "Valkey bytes / scheduled task")],
    ratios=[
        Ratio("scheduling: Celery defaults / taskworks, lateness p99", "scheduling",
              "late_p99", "Celery defaults", "taskworks", 1.0),
        Ratio("scheduling: tasks run exactly once, taskworks / Celery defaults",
              "scheduling", "once", "taskworks", "Celery defaults", 1.0),
    ],
    run=run,
    chart_metric="late_p99",
    chart_label="scheduling: lateness p99 ms of due tasks (lower is better)",
))
