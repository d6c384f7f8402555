"""Autoscale: a burst drained by the supervisor, which starts at its minimum of one worker
and scales up to two, against a fixed prefork worker with the same two processes.

Both sides run taskworks' full runtime and start idle and warm; the burst appears at once
(staged, then moved in one transaction, as in the drain scenario). The ratio says what
starting small costs when a burst arrives: fixed time / supervised time (1.0 = no cost).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from bench.core import (
    DONE_KEY,
    WORK_DB,
    BenchEnv,
    Column,
    Figure,
    Ratio,
    Scenario,
    Sizes,
    measured,
    register,
    wait_for_count,
)
from bench.procs import Workers
from bench.sides.tw_app import TaskworksSide
from taskworks.scaling.supervisor import Supervisor
from taskworks.settings import load_settings

GROUPS = {"burst": {"queues": ["default"], "pool": "solo", "concurrency": 1,
                    "min_workers": 1, "max_workers": 2, "target_backlog": 100}}


def _release(env: BenchEnv, side: TaskworksSide, n: int, cpu: Any) -> dict[str, float]:
    env.redis.set(DONE_KEY, 0)
    side.stage(env, n)
    staged = list(env.stage.scan_iter(count=10_000))
    polls: dict[str, int] = {"move": len(staged), "multi": 1, "exec": 1}
    with measured(env, cpu, exclude=polls) as m:
        pipe = env.stage.pipeline(transaction=True)
        for name in staged:
            pipe.move(name, WORK_DB)
        released = time.perf_counter()
        pipe.execute()
        m["wall"] = wait_for_count(env, DONE_KEY, n, timeout=max(120, n / 50),
                                   polls=polls) - released
    env.stage.flushdb()
    return m


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def _supervised(env: BenchEnv, sizes: Sizes, n: int) -> Figure:
    env.reset()
    side = TaskworksSide()
    side.start(env).stop()  # migrations only: the supervisor brings its own workers
    settings = load_settings(broker_url=env.url, data_dir=env.dir / "data",
                             database_url=f"sqlite:///{env.dir / 'taskworks.db'}",
                             worker_groups=GROUPS,
                             autoscale={"interval": 0.5, "scale_up_cooldown": 0.5,
                                        "scale_down_after": 1.0})
    supervisor = Supervisor(settings, app_spec="bench.sides.tw_app:tw",
                            env=env.worker_env(TASKWORKS_WORKER_GROUPS=json.dumps(GROUPS)))
    stop = threading.Event()
    thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    thread.start()
    figure = Figure("autoscale", "taskworks supervisor (1 -> 2 solo)")
    try:
        _release(env, side, sizes.warmup_tasks, lambda: 0.0)  # warm-up, and readiness
        for _ in range(sizes.runs):
            _wait(lambda: len(supervisor.live("burst")) == 1, 60, "back to one worker")
            m = _release(env, side, n, lambda: 0.0)
            figure.add(rate=n / m["wall"], wall=m["wall"], commands_per_task=m["commands"] / n)
    finally:
        stop.set()
        thread.join(10)
        supervisor.stop(30)
        env.reset()
    return figure


def _fixed(env: BenchEnv, sizes: Sizes, n: int) -> Figure:
    env.reset()
    side = TaskworksSide()
    workers: Workers = side.start(env)  # prefork -c 2: two processes from the start
    figure = Figure("autoscale", "fixed prefork -c 2")
    try:
        _release(env, side, sizes.warmup_tasks, workers.cpu_seconds)
        for _ in range(sizes.runs):
            m = _release(env, side, n, workers.cpu_seconds)
            workers.check_alive()
            figure.add(rate=n / m["wall"], wall=m["wall"], commands_per_task=m["commands"] / n)
    finally:
        workers.stop()
        env.reset()
    return figure


def run(env: BenchEnv, sizes: Sizes) -> list[Figure]:
    n = min(5000, sizes.drain_tasks)  # the burst of the autoscaler issue
    return [_supervised(env, sizes, n), _fixed(env, sizes, n)]


register(Scenario(
    name="autoscale",
    title="A burst under the autoscaler",
    measures="Time to drain a burst of 5,000 no-op tasks: the supervisor starting from one "
             "solo worker and scaling to two, against a fixed prefork worker with two "
             "processes from the start.",
    columns=[Column("rate", "tasks/s"), Column("wall", "wall s", "{:.2f}"),
             Column("commands_per_task", "Redis commands / task", "{:.1f}")],
    ratios=[Ratio("supervised / fixed prefork (autoscaler issue)", "autoscale", "rate",
                  "taskworks supervisor (1 -> 2 solo)", "fixed prefork -c 2", 1.0)],
    run=run,
    chart_metric="rate",
    chart_label="autoscale burst: tasks/s (higher is better)",
))
