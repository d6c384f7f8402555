"""Backlog: cost as work grows. One side drains a small and a large backlog of no-op tasks.

Each depth is drained by freshly started, warm and idle workers. The backlog is published
through the side's own client into the staging database in chunks (a million messages in
one ``submit_many`` call would sit in the client's memory), then moved into the workers'
database in one transaction, as in the drain scenario: the clock starts at the move.
While the workers drain, the harness polls the done counter (every 0.5 s; more often for
backlogs that take only seconds) and keeps (time, count) pairs; the rate at the start and
at the end of the drain are computed from them over windows of ``window(depth)`` tasks.

The large depth is drained once per side (a million tasks take 10-40 minutes at full
size), the small one ``sizes.runs`` times, half before the large drain and half after: the
ratio compares moments minutes apart, and this machine's speed drifts by tens of percent
over minutes, so the small depth's median is taken on both sides of the large one.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

import psutil

from bench.core import (
    DONE_KEY,
    WORK_DB,
    BenchEnv,
    Column,
    Figure,
    Ratio,
    Scenario,
    Sizes,
    register,
)
from bench.procs import Workers
from bench.scenarios._common import drain_once, selected, with_workers

#: messages per ``stage`` call: the client builds each call's messages in memory
STAGE_CHUNK = 50_000
#: the rate windows: this many tasks, or 5 % of the backlog when that is fewer
WINDOW_TASKS = 10_000
#: a drain whose counter stays still this long has a problem (a stuck or dead worker)
STALL_SECONDS = 120.0
DEPTHS = ("small", "large")

Sample = tuple[float, int]  # (time.perf_counter(), tasks done)


@dataclass(frozen=True)
class MetricRatio(Ratio):
    """The numerator side's ``metric`` / the denominator side's ``denominator_metric``.

    ``Ratio`` divides one metric of two sides; this one divides two metrics (of two sides
    of this scenario, or of the same side).
    """

    denominator_metric: str = ""

    def value(self, figures: list[Figure]) -> float | None:
        by_side = {f.side: f for f in figures if f.scenario == self.scenario}
        num, den = by_side.get(self.numerator), by_side.get(self.denominator)
        if num is None or den is None:
            return None
        a = num.median(self.metric)
        b = den.median(self.denominator_metric or self.metric)
        if a is None or not b:
            return None
        return a / b


def side_name(side: str, depth: str) -> str:
    return f"{side}, {depth} backlog"


def backlog_sides() -> list[Any]:
    from bench.sides.tw_app import TaskworksSide

    # taskworks only: Celery defaults (celery_apps.celery_defaults(), which fits as it is)
    # would add another half hour at full size
    return selected([TaskworksSide()])


def window(depth: int) -> int:
    return max(1, min(WINDOW_TASKS, depth // 20))


def poll_interval(depth: int) -> float:
    """0.5 s, shorter for a backlog of under 20,000 tasks (a few seconds of draining)."""
    return min(0.5, max(0.005, depth / 40_000))


def timeout(depth: int) -> float:
    """Two minutes plus a floor of 100 tasks/s (a fifth of the rate measured at full size)."""
    return 120 + depth / 100


def used_memory(env: BenchEnv) -> int:
    return int(env.redis.info("memory")["used_memory"])


def worker_rss(workers: Workers) -> float:
    """Resident memory of every process of the side (roots and their children), in MiB."""
    total = 0
    for proc in workers.procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(proc.pid)
            tree = [root, *root.children(recursive=True)]
            for member in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += member.memory_info().rss
    return total / 2**20


def progress(env: BenchEnv, workers: Workers, depth: int, released: float) -> list[Sample]:
    """Poll the done counter until it reaches ``depth``: (time, count) from the release on."""
    samples: list[Sample] = [(released, 0)]
    interval = poll_interval(depth)
    deadline = time.monotonic() + timeout(depth)
    moved = time.monotonic()
    while samples[-1][1] < depth:
        time.sleep(interval)
        value = env.redis.get(DONE_KEY)
        samples.append((time.perf_counter(), int(value or 0)))
        now = time.monotonic()
        if samples[-1][1] != samples[-2][1]:
            moved = now
        workers.check_alive()
        if now > deadline or now - moved > STALL_SECONDS:
            raise TimeoutError(f"{DONE_KEY} reached {samples[-1][1]} of {depth} in "
                               f"{samples[-1][0] - released:.0f} s")
    return samples


def rate(a: Sample, b: Sample) -> float:
    return (b[1] - a[1]) / (b[0] - a[0])


def window_rates(samples: list[Sample], depth: int) -> tuple[float, float]:
    """Tasks/s over the first and the last ``window(depth)`` tasks of the drain.

    The first window starts at the first poll that saw a task done (the wake-up after the
    move is left out) and ends at the first poll that saw ``window`` more. The last one
    ends at the last poll before the counter reached ``depth`` (the moment the backlog
    ran out is only known to within one poll: a window ending at the final poll would
    count idle time) and starts at the latest poll ``window`` tasks before it. A drain
    too short for the polls (the tiny size) falls back to its whole length.
    """
    w = window(depth)
    final = samples[-1]
    busy = [s for s in samples[1:-1] if s[1] > 0]  # polls that saw a drain in progress
    first = busy[0] if busy else samples[0]
    start_end = next((s for s in busy if s[1] - first[1] >= w), final)
    last = busy[-1] if busy else final
    end_start = next((s for s in reversed(samples[:-1]) if last[1] - s[1] >= w), samples[0])
    if start_end[0] <= first[0]:
        first, start_end = samples[0], final
    if last[0] <= end_start[0]:
        end_start, last = samples[0], final
    return rate(first, start_end), rate(end_start, last)


def drain_backlog(env: BenchEnv, side: Any, workers: Workers, depth: int) -> dict[str, float]:
    env.redis.set(DONE_KEY, 0)
    before = used_memory(env)
    for chunk in range(0, depth, STAGE_CHUNK):
        side.stage(env, min(STAGE_CHUNK, depth - chunk))
    per_task = (used_memory(env) - before) / depth
    staged = list(env.stage.scan_iter(count=10_000))
    rss_start = worker_rss(workers)
    pipe = env.stage.pipeline(transaction=True)
    for name in staged:
        pipe.move(name, WORK_DB)  # MOVE wakes the workers blocked on the queue
    released = time.perf_counter()
    pipe.execute()
    samples = progress(env, workers, depth, released)
    rss_end = worker_rss(workers)
    env.stage.flushdb()
    rate_start, rate_end = window_rates(samples, depth)
    return {"depth": depth, "rate": depth / (samples[-1][0] - released),
            "rate_start": rate_start, "rate_end": rate_end, "memory_per_task": per_task,
            "rss_start": rss_start, "rss_end": rss_end}


def run(env: BenchEnv, sizes: Sizes) -> list[Figure]:
    sides = backlog_sides()
    depths = {"small": sizes.drain_tasks, "large": sizes.backlog_tasks}
    figures = {(side.name, depth): Figure("backlog", side_name(side.name, depth),
                                          note=f"{depths[depth]:,} tasks")
               for side in sides for depth in DEPTHS}

    def once(side: Any, depth: str) -> None:
        def body(workers: Workers) -> None:
            drain_once(env, side, workers, sizes.warmup_tasks)  # warm-up, and readiness
            figures[side.name, depth].add(**drain_backlog(env, side, workers, depths[depth]))

        with_workers(env, side, body)

    before = (sizes.runs + 1) // 2
    for run_index in range(sizes.runs + 1):  # fresh workers each time
        for side in sides:
            once(side, "large" if run_index == before else "small")
    return list(figures.values())


def _measures() -> str:
    return ("Cost as work grows: the taskworks CLI worker (its default topology, two solo "
            "processes, and default settings) drains a small backlog (the drain size: "
            "20,000 no-op tasks at full size) and "
            "a large one (1,000,000 at full size), each on freshly started workers after "
            "a warm-up. The backlog is staged through `submit_many` in chunks of 50,000 "
            "into the staging database and moved into the workers' database in one "
            "transaction: the clock starts at the move (whole-drain tasks/s); the done "
            "counter is polled every 0.5 s (more often under 20,000 tasks) and the start "
            "and end rates are taken over the first and the last 10,000 tasks (5 % of "
            "the backlog when that is fewer), from the first poll that saw a task done to "
            "the last poll before the backlog was empty. Valkey memory per queued task: "
            "`used_memory` after staging less before, over the depth. Worker RSS: every "
            "process of the worker (children included) just before the move and when "
            "the last task is done. The small depth is the median of the runs, half of them "
            "made before the large drain and half after; the large one runs once (10-40 "
            "minutes at full size). Only the taskworks side runs: "
            "Celery defaults would add about as long again.")


register(Scenario(
    name="backlog",
    title="Backlog: cost as work grows",
    measures=_measures(),
    columns=[Column("depth", "tasks queued"), Column("rate", "tasks/s"),
             Column("rate_start", "tasks/s, first window"),
             Column("rate_end", "tasks/s, last window"),
             Column("memory_per_task", "Valkey bytes / queued task"),
             Column("rss_start", "worker RSS MiB, start", "{:.1f}"),
             Column("rss_end", "worker RSS MiB, end", "{:.1f}")],
    ratios=[
        MetricRatio("backlog: rate at the end of the large / at the start of the small "
                    "(1,000,000 against 20,000 at full size)", "backlog", "rate_end",
                    side_name("taskworks", "large"), side_name("taskworks", "small"), 0.9,
                    denominator_metric="rate_start"),
        MetricRatio("backlog: worker RSS at the end / at the start of the large drain "
                    "(lower is better)", "backlog", "rss_end",
                    side_name("taskworks", "large"), side_name("taskworks", "large"), 1.1,
                    higher_is_better=False, denominator_metric="rss_start"),
    ],
    run=run,
    chart_metric="rate_end",
    chart_label="backlog: tasks/s over the last window (higher is better)",
))
