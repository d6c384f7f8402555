"""Helpers the worker-based scenarios share."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from bench.core import DONE_KEY, WORK_DB, BenchEnv, measured, wait_for_count
from bench.procs import Workers


def drain_sides() -> list[Any]:
    """Every side with workers, in report order (imports here: dramatiq needs the env)."""
    from bench.sides.bare import BareSide
    from bench.sides.celery_apps import celery_defaults, celery_tuned, taskworks_off
    from bench.sides.dramatiq_app import DramatiqSide
    from bench.sides.rq_jobs import RQSide
    from bench.sides.tw_app import GENERAL_GROUP, PREFORK, TaskworksSide

    return selected([TaskworksSide(), taskworks_off(),
                     TaskworksSide("taskworks (prefork -c 2)", PREFORK),
                     TaskworksSide("taskworks (threads x4)", GENERAL_GROUP),
                     celery_defaults(), celery_tuned(), DramatiqSide(), RQSide(), BareSide()])


def selected(sides: list[Any]) -> list[Any]:
    """Only the sides named in BENCH_SIDES (comma-separated), when it is set."""
    wanted = {s.strip() for s in os.environ.get("BENCH_SIDES", "").split(",") if s.strip()}
    return [side for side in sides if not wanted or side.name in wanted]


def with_workers(env: BenchEnv, side: Any, body: Callable[[Any], Any]) -> Any:
    env.reset()
    workers = side.start(env)
    try:
        return body(workers)
    finally:
        workers.stop()
        env.reset()


def drain_once(env: BenchEnv, side: Any, workers: Workers, n: int) -> dict[str, float]:
    env.redis.set(DONE_KEY, 0)
    side.stage(env, n)
    staged = list(env.stage.scan_iter(count=10_000))
    polls: dict[str, int] = {"move": len(staged), "multi": 1, "exec": 1}
    with measured(env, workers.cpu_seconds, exclude=polls) as m:
        pipe = env.stage.pipeline(transaction=True)
        for name in staged:
            pipe.move(name, WORK_DB)  # MOVE wakes the workers blocked on the queue
        released = time.perf_counter()
        pipe.execute()
        try:
            done = wait_for_count(env, DONE_KEY, n, timeout=max(120, n / 50), polls=polls)
        except TimeoutError as exc:  # say which side, and what its workers said
            raise TimeoutError(f"{side.name}: {exc}; its workers' output ends with:\n"
                               f"{workers.output_tail(1500)}") from exc
        m["wall"] = done - released
    workers.check_alive()
    env.stage.flushdb()
    return m


def drain_figures(env: BenchEnv, side: Any, workers: Workers, n: int,
                  warmup: int) -> dict[str, float]:
    """A warm-up drain (and readiness), then ``n`` tasks timed: the drain table's figures."""
    drain_once(env, side, workers, warmup)
    m = drain_once(env, side, workers, n)
    return {"rate": n / m["wall"], "wall": m["wall"], "cpu_per_1k": m["cpu"] / n * 1000,
            "broker_cpu_per_1k": m["broker_cpu"] / n * 1000,
            "commands_per_task": m["commands"] / n}
