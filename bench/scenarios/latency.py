"""Closed-loop latency: one task in flight; enqueue-to-start and enqueue-to-result."""

from __future__ import annotations

from typing import Any

from bench.core import BenchEnv, Column, Figure, Ratio, Scenario, Sizes, percentile, register
from bench.procs import Workers
from bench.scenarios._common import drain_once, selected, with_workers


def _sides() -> list[Any]:
    from bench.sides.bare import BareSide
    from bench.sides.celery_apps import celery_defaults
    from bench.sides.dramatiq_app import DramatiqSide
    from bench.sides.tw_app import TaskworksSide

    return selected([TaskworksSide(), celery_defaults(), DramatiqSide(), BareSide()])


def run(env: BenchEnv, sizes: Sizes) -> list[Figure]:
    figures = []
    for side in _sides():
        def body(workers: Workers, side: Any = side) -> Figure:
            drain_once(env, side, workers, 5)  # the workers are up and consuming
            once = side.round_trip(env)
            for _ in range(max(5, sizes.latency_iterations // 20)):  # warm-up
                once()
            figure = Figure("latency", side.name)
            for _ in range(sizes.runs):
                cpu0 = workers.cpu_seconds()
                starts, results = [], []
                for _ in range(sizes.latency_iterations):
                    sent, started, received = once()
                    starts.append((started - sent) * 1000)
                    results.append((received - sent) * 1000)
                n = sizes.latency_iterations
                figure.add(start_p50=percentile(starts, 50), start_p99=percentile(starts, 99),
                           result_p50=percentile(results, 50),
                           result_p99=percentile(results, 99),
                           cpu_per_1k=(workers.cpu_seconds() - cpu0) / n * 1000)
            workers.check_alive()
            return figure

        figures.append(with_workers(env, side, body))
    return figures


register(Scenario(
    name="latency",
    title="Closed-loop latency (one task in flight)",
    measures="The client sends a task that returns time.time() and waits for its result, "
             "then sends the next. Enqueue-to-start: the task's own clock minus the send "
             "time; enqueue-to-result: when the client holds the result.",
    columns=[Column("start_p50", "to start p50 ms", "{:.2f}"),
             Column("start_p99", "to start p99 ms", "{:.2f}"),
             Column("result_p50", "to result p50 ms", "{:.2f}"),
             Column("result_p99", "to result p99 ms", "{:.2f}"),
             Column("cpu_per_1k", "worker CPU s / 1k", "{:.3f}")],
    ratios=[
        Ratio("taskworks / Celery defaults, to-result p50", "latency", "result_p50",
              "taskworks", "Celery defaults", 1.2, higher_is_better=False),
        Ratio("taskworks / Celery defaults, to-start p50", "latency", "start_p50",
              "taskworks", "Celery defaults", 1.2, higher_is_better=False),
    ],
    run=run,
    chart_metric="result_p50",
    chart_label="latency: enqueue-to-result p50 ms (lower is better)",
))
