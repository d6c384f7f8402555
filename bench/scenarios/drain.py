"""Drain: a backlog of no-op tasks, workers warm and idle, timed until every task is done.

The backlog is published through each side's own client into a staging database, then
moved into the workers' database in one transaction: the clock starts when the whole
backlog appears, not while it trickles in, and worker start-up is not timed.
"""

from __future__ import annotations

from typing import Any

from bench.core import (
    BenchEnv,
    Column,
    Figure,
    Ratio,
    Scenario,
    Sizes,
    register,
)
from bench.procs import Workers
from bench.scenarios._common import drain_figures, drain_sides, with_workers


def run(env: BenchEnv, sizes: Sizes) -> list[Figure]:
    sides = drain_sides()
    figures = {side.name: Figure("drain", side.name) for side in sides}
    n = sizes.drain_tasks
    # runs interleaved (run 1 of every side, then run 2, ...): on a shared machine the
    # load drifts, and a side measured only early or only late would carry that drift
    for _ in range(sizes.runs):
        for side in sides:
            def body(workers: Workers, side: Any = side) -> None:
                figures[side.name].add(**drain_figures(env, side, workers, n,
                                                       sizes.warmup_tasks))

            with_workers(env, side, body)
    return list(figures.values())


register(Scenario(
    name="drain",
    title="Drain a backlog of no-op tasks",
    measures="Tasks per second from the moment the whole backlog appears until every task "
             "has run: taskworks through its CLI worker with its default topology and "
             "settings (`taskworks worker --concurrency 2`: two solo processes), taskworks "
             "off (the same two processes without the runtime), Celery defaults (prefork "
             "-c 2), dramatiq -p 2, 2 RQ workers, 2 bare loops; 'taskworks (prefork -c 2)' "
             "is the CLI worker's former default; 'taskworks (threads x4)' is the shipped "
             "general group, one process of 4 threads. Runs are interleaved across sides, "
             "each on freshly started workers after a warm-up.",
    columns=[Column("rate", "tasks/s"), Column("wall", "wall s", "{:.2f}"),
             Column("cpu_per_1k", "worker CPU s / 1k tasks", "{:.3f}"),
             Column("broker_cpu_per_1k", "Valkey CPU s / 1k tasks", "{:.3f}"),
             Column("commands_per_task", "Redis commands / task", "{:.1f}")],
    ratios=[
        Ratio("taskworks / taskworks off (issue 3)", "drain", "rate", "taskworks",
              "taskworks off", 0.9),
        Ratio("taskworks / Celery defaults", "drain", "rate", "taskworks", "Celery defaults",
              1.5),
        Ratio("taskworks / Dramatiq", "drain", "rate", "taskworks", "Dramatiq", 0.5),
        Ratio("taskworks / taskworks (prefork -c 2)", "drain", "rate", "taskworks",
              "taskworks (prefork -c 2)", 1.0),
    ],
    run=run,
    chart_metric="rate",
    chart_label="drain: tasks/s (higher is better)",
))
