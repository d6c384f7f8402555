"""I/O-bound drain: the drain's backlog with every task waiting 10 ms first (a call to
another service), to measure the pool for I/O-bound queue groups.

The no-op drain chose the default topology of ``taskworks worker`` (one solo process per
core: no hand-off, the least CPU per task). A task that waits on a socket needs tasks in
flight instead: ``taskworks up``'s ``general`` group (default, io_intensive, scheduled
queues) runs threads x4. This scenario is that choice's measurement.
"""

from __future__ import annotations

from typing import Any

from bench.core import BenchEnv, Column, Figure, Ratio, Scenario, Sizes, register
from bench.procs import Workers
from bench.scenarios._common import drain_figures, selected, with_workers

#: how long each task waits, in milliseconds
TASK_SLEEP_MS = 10.0
GENERAL = "taskworks general group (threads x4)"


def io_sides() -> list[Any]:
    from bench.sides.celery_apps import celery_defaults
    from bench.sides.dramatiq_app import DramatiqSide
    from bench.sides.tw_app import GENERAL_GROUP, TaskworksSide

    return selected([TaskworksSide(), TaskworksSide(GENERAL, GENERAL_GROUP),
                     celery_defaults(), DramatiqSide()])


def tasks(sizes: Sizes) -> int:
    """A tenth of the drain size: 2,000 at full size take 10 s on two slots."""
    return max(10, sizes.drain_tasks // 10)


def run(env: BenchEnv, sizes: Sizes) -> list[Figure]:
    sides = io_sides()
    n = tasks(sizes)
    figures = {side.name: Figure("io", side.name, note=f"{n:,} tasks of {TASK_SLEEP_MS:g} ms")
               for side in sides}
    env.task_sleep_ms = TASK_SLEEP_MS  # the workers started below inherit it
    try:
        for _ in range(sizes.runs):  # interleaved, fresh workers each time
            for side in sides:
                def body(workers: Workers, side: Any = side) -> None:
                    figures[side.name].add(**drain_figures(
                        env, side, workers, n, max(10, sizes.warmup_tasks // 10)))

                with_workers(env, side, body)
    finally:
        env.task_sleep_ms = 0.0
    return list(figures.values())


register(Scenario(
    name="io",
    title="I/O-bound drain: tasks that wait 10 ms",
    measures="The drain's backlog (a tenth of its size: 2,000 tasks at full size) with every "
             "task sleeping 10 ms before it counts itself done, standing for a call to "
             "another service. taskworks' default topology (`taskworks worker "
             "--concurrency 2`: two solo processes, 2 tasks in flight) against the `general` "
             "group `taskworks up` runs for I/O-bound queues (one process of 4 threads, "
             "prefetch 4), Celery defaults (prefork -c 2) and Dramatiq (-p 2, 8 threads "
             "each). 2 tasks in flight drain at most 200 tasks/s, 4 at most 400. Runs are "
             "interleaved, each on freshly started workers after a warm-up.",
    columns=[Column("rate", "tasks/s"), Column("wall", "wall s", "{:.2f}"),
             Column("cpu_per_1k", "worker CPU s / 1k tasks", "{:.3f}")],
    ratios=[
        Ratio("io: general group (threads x4) / default topology (solo x2)", "io", "rate",
              GENERAL, "taskworks", 1.5),
        Ratio("io: general group (threads x4) / Celery defaults", "io", "rate", GENERAL,
              "Celery defaults", 1.5),
    ],
    run=run,
    chart_metric="rate",
    chart_label="io: tasks/s with 10 ms tasks (higher is better)",
))
