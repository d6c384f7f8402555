"""Workflows (issue 5): a 1,000-step fan-out/fan-in of no-op steps, side by side with
1,000 bare Celery tasks and a Celery chord of the same width, on the same taskworks
worker (prefork -c 2, journal on, SQLite store). Then a 10,000-wide fan-out, once.

Every side's clock runs from the first publish until its last piece of work ran (a
counter the last task increments): the workflow's join step, the chord's callback,
the 1,000th bare task. Orchestration overhead per step is
``(workflow wall - bare wall) / steps``.

Standalone: ``python -m bench.scenarios.workflows [width]`` prints the figures.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Any

from bench.core import (
    DONE_KEY,
    BenchEnv,
    Column,
    Figure,
    Ratio,
    Scenario,
    Sizes,
    register,
    wait_for_count,
)
from bench.procs import Workers, python
from taskworks import Taskworks
from taskworks.workflows import Step, Workflow

WIDTH = 1_000
WIDE = int(__import__("os").environ.get("BENCH_WF_WIDE", "10000"))


def build(**overrides: Any) -> Taskworks:
    """The app of both the harness (overrides) and the workers (the environment)."""
    import redis

    from taskworks.settings import load_settings

    tw = Taskworks(settings=load_settings(**overrides)) if overrides else Taskworks()
    client: list[redis.Redis] = []

    def done() -> None:
        if not client:
            client.append(redis.Redis.from_url(tw.settings.effective_broker_url))
        client[0].incr(DONE_KEY)

    @tw.task(name="bench.wf.noop")
    def noop(*args: Any, **kwargs: Any) -> None:
        return None

    @tw.task(name="bench.wf.count")
    def count(*args: Any, **kwargs: Any) -> None:
        done()

    return tw


_tw: Taskworks | None = None


def __getattr__(name: str) -> Any:
    global _tw
    if name == "tw":
        if _tw is None:
            _tw = build()
        return _tw
    raise AttributeError(name)


def fan(width: int) -> Workflow:
    middle = tuple(Step(f"m{i}", "bench.wf.noop", depends_on=("root",)) for i in range(width))
    return Workflow(f"bench-fan-{width}-{uuid.uuid4().hex[:6]}", (
        Step("root", "bench.wf.noop"), *middle,
        Step("join", "bench.wf.count", depends_on=tuple(s.name for s in middle))))


def _timed(env: BenchEnv, start: Any, target: int = 1, timeout: float = 600,
           cpu: Any = None, into: dict[str, list[float]] | None = None,
           side: str = "") -> float:
    """Wall seconds until the counter reaches target; the workers' CPU seconds go to
    ``into[side + "_cpu"]`` (less sensitive than wall time to a busy machine)."""
    env.redis.set(DONE_KEY, 0)
    cpu0 = cpu() if cpu else 0.0
    t0 = time.perf_counter()
    start()
    wall = wait_for_count(env, DONE_KEY, target, timeout=timeout, polls={}) - t0
    if cpu and into is not None:
        time.sleep(0.5)  # the last task's result and journal writes
        into.setdefault(f"{side}_cpu", []).append(cpu() - cpu0)
    return wall


def measure(env: BenchEnv, width: int, runs: int, wide_width: int = WIDE,
            ) -> dict[str, list[float]]:
    from celery import chord

    from taskworks.store.migrate import upgrade

    tw = build(broker_url=env.url, data_dir=env.dir / "data",
               database_url=f"sqlite:///{env.dir / 'taskworks.db'}")
    upgrade(tw.store)
    workers = Workers("taskworks", [python(
        "-m", "taskworks", "worker", "--app", "bench.scenarios.workflows:tw", "--queues",
        "default", "--pool", "prefork", "--concurrency", "2")], env.worker_env())
    out: dict[str, list[float]] = {"bare": [], "chord": [], "workflow": []}
    try:
        # warm-up (and readiness): the workers answer a small run of each kind
        wf_small = tw.workflows.register(fan(10))
        _timed(env, lambda: tw.workflows.start(wf_small.name), timeout=120)
        wf = tw.workflows.register(fan(width))
        noop, count = tw.app.tasks["bench.wf.noop"], tw.app.tasks["bench.wf.count"]
        cpu = workers.cpu_seconds
        for _ in range(runs):
            out["bare"].append(_timed(
                env, lambda: tw.submit_many("bench.wf.count", [[] for _ in range(width)]),
                target=width, cpu=cpu, into=out, side="bare"))
            out["chord"].append(_timed(
                env, lambda: chord(noop.s() for _ in range(width))(count.si()),
                cpu=cpu, into=out, side="chord"))
            out["workflow"].append(_timed(env, lambda: tw.workflows.start(wf.name),
                                          cpu=cpu, into=out, side="workflow"))
        workers.check_alive()
        wide = tw.workflows.register(fan(wide_width))
        out["wide"] = [_timed(env, lambda: tw.workflows.start(wide.name), timeout=1200)]
    finally:
        workers.stop()
    return out


def run(env: BenchEnv, sizes: Sizes) -> list[Figure]:
    env.reset()
    width = WIDTH if sizes.drain_tasks >= 1000 else 100
    wide_width = WIDE if width >= 1000 else 1000  # "tiny": a quick check, not the 10k
    found = measure(env, width, sizes.runs, wide_width)
    figures = []
    for side in ("bare", "chord", "workflow"):
        figure = Figure("workflows", {"bare": "bare Celery tasks", "chord": "Celery chord",
                                      "workflow": "taskworks workflow"}[side])
        for wall, cpu in zip(found[side], found[f"{side}_cpu"], strict=True):
            figure.add(wall=wall, per_step_ms=wall / width * 1000,
                       cpu_per_step_ms=cpu / width * 1000)
        figures.append(figure)
    overhead = Figure("workflows", "workflow overhead")
    for wf_wall, bare_wall, wf_cpu, bare_cpu in zip(
            found["workflow"], found["bare"], found["workflow_cpu"], found["bare_cpu"],
            strict=True):
        overhead.add(wall=wf_wall - bare_wall, per_step_ms=(wf_wall - bare_wall) / width * 1000,
                     cpu_per_step_ms=(wf_cpu - bare_cpu) / width * 1000)
    figures.append(overhead)
    wide = Figure("workflows", f"{wide_width:,}-wide fan-out")
    wide.add(wall=found["wide"][0], per_step_ms=found["wide"][0] / wide_width * 1000,
             cpu_per_step_ms=0.0)
    figures.append(wide)
    return figures


register(Scenario(
    name="workflows",
    title="A 1,000-step fan-out/fan-in workflow against bare tasks and a chord",
    measures="Wall seconds from the first publish until the last piece of work ran, one "
             "taskworks worker (prefork -c 2) for every side; per step = wall / 1,000.",
    columns=[Column("wall", "wall s", "{:.2f}"), Column("per_step_ms", "ms / step", "{:.2f}"),
             Column("cpu_per_step_ms", "worker CPU ms / step", "{:.2f}")],
    ratios=[
        Ratio("workflow / bare tasks (time, lower is better)", "workflows", "wall",
              "taskworks workflow", "bare Celery tasks", 1.5, higher_is_better=False),
        Ratio("workflow / chord (time, lower is better)", "workflows", "wall",
              "taskworks workflow", "Celery chord", 1.5, higher_is_better=False),
    ],
    run=run,
    chart_metric="wall",
    chart_label="workflows: wall s (lower is better)",
))


def main() -> None:
    width = int(sys.argv[1]) if len(sys.argv) > 1 else WIDTH
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    env = BenchEnv()
    try:
        found = measure(env, width, runs)
    finally:
        env.close()
    for side, values in found.items():
        print(f"{side:13s} " + "  ".join(f"{v:.2f}s" for v in values))
    import statistics

    med = {k: statistics.median(v) for k, v in found.items()}
    print(f"workflow/bare {med['workflow'] / med['bare']:.2f}x wall, "
          f"{med['workflow_cpu'] / med['bare_cpu']:.2f}x worker CPU; overhead "
          f"{(med['workflow'] - med['bare']) / width * 1000:.2f} ms/step wall, "
          f"{(med['workflow_cpu'] - med['bare_cpu']) / width * 1000:.2f} ms/step CPU; "
          f"chord {med['chord']:.2f}s; {WIDE}-wide {found['wide'][0]:.1f}s")


if __name__ == "__main__":
    main()
