"""Durable mode: the same taskworks workload with the AOF fsynced every second and on every write.

``embedded_fsync = "always"`` starts the embedded Valkey with ``appendfsync always``: it
fsyncs the append-only file before it answers a write, so an acknowledged enqueue
survives a power failure. This scenario measures what that costs. It switches the one
embedded Valkey of the run between the two modes with ``CONFIG SET appendfsync`` (the
server setting ``embedded_fsync`` chooses at start) and checks it with ``CONFIG GET``
before every measurement; the modes alternate run by run, so machine drift hits both.

The cost depends on the disk under the data dir (an fsync on a laptop SSD, a cloud
volume and tmpfs differ by orders of magnitude): the report names the file system.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psutil

from bench.core import (
    BenchEnv,
    Column,
    Figure,
    Ratio,
    Scenario,
    Sizes,
    measured,
    register,
)
from bench.procs import Workers
from bench.scenarios._common import drain_once, with_workers

MODES = ("everysec", "always")


def side_name(mode: str) -> str:
    return f"taskworks, appendfsync {mode}"


@contextmanager
def fsync_mode(env: BenchEnv, mode: str) -> Iterator[None]:
    env.redis.config_set("appendfsync", mode)
    if env.redis.config_get("appendfsync") != {"appendfsync": mode}:
        raise RuntimeError(f"valkey did not switch to appendfsync {mode}")
    try:
        yield
    finally:
        env.redis.config_set("appendfsync", "everysec")  # the run's default for the others


def file_system(env: BenchEnv) -> str:
    """The file system type of the mount holding the AOF (fsync's cost depends on it)."""
    data = str(env.broker.dir.resolve())
    mounts = sorted((p for p in psutil.disk_partitions(all=True)
                     if data.startswith(p.mountpoint)), key=lambda p: len(p.mountpoint))
    return f"{mounts[-1].fstype} ({mounts[-1].mountpoint})" if mounts else "unknown"


def _enqueue(env: BenchEnv, figures: dict[str, Figure], n: int, runs: int, warmup: int) -> None:
    from bench.sides.tw_app import build

    tw = build(broker_url=env.url, data_dir=env.dir / "data",
               database_url=f"sqlite:///{env.dir / 'taskworks.db'}")

    def one_at_a_time(count: int) -> None:
        for _ in range(count):
            tw.submit("bench.noop")

    def bulk(count: int) -> None:
        tw.submit_many("bench.noop", [[] for _ in range(count)])

    ways: list[tuple[str, Callable[[int], None]]] = [("submit_rate", one_at_a_time),
                                                     ("bulk_rate", bulk)]
    env.reset()
    for _, publish in ways:
        publish(warmup)  # connections, declarations, imports
    for _ in range(runs):
        for mode in MODES:
            with fsync_mode(env, mode):
                for metric, publish in ways:
                    env.reset()
                    with measured(env, time.process_time) as m:
                        publish(n)
                    figures[mode].add(**{metric: n / m["wall"]})
    env.reset()


def _drain(env: BenchEnv, figures: dict[str, Figure], n: int, runs: int, warmup: int) -> None:
    from bench.sides.tw_app import TaskworksSide

    side = TaskworksSide()  # the CLI worker, prefork -c 2, journal on

    def body(workers: Workers) -> None:
        drain_once(env, side, workers, warmup)  # warm-up, and readiness
        # one set of warm workers serves both modes, alternating: only the fsync differs
        for _ in range(runs):
            for mode in MODES:
                with fsync_mode(env, mode):
                    m = drain_once(env, side, workers, n)
                figures[mode].add(drain_rate=n / m["wall"],
                                  broker_cpu_per_1k=m["broker_cpu"] / n * 1000)

    with_workers(env, side, body)


def run(env: BenchEnv, sizes: Sizes) -> list[Figure]:
    where = file_system(env)
    figures = {mode: Figure("durable", side_name(mode), note=f"AOF on {where}")
               for mode in MODES}
    _enqueue(env, figures, sizes.enqueue_tasks, sizes.runs, sizes.warmup_tasks)
    _drain(env, figures, sizes.drain_tasks, sizes.runs, sizes.warmup_tasks)
    return list(figures.values())


def _ratio(label: str, metric: str, target: float) -> Ratio:
    return Ratio(f"durable: always / everysec, {label}", "durable", metric,
                 side_name("always"), side_name("everysec"), target)


def _measures() -> str:
    return ("Throughput of one taskworks workload with the embedded Valkey's AOF fsynced "
            "every second (the default) and on every write (`embedded_fsync = \"always\"`), "
            "switched on the one server of the run and alternated run by run: "
            "`submit` one at a time, `submit_many` of the whole batch, and a drain by the "
            "CLI worker (prefork -c 2, journal on). The fsync cost depends on the disk; "
            "the durable ratios' targets are what docs/deploy.md promises.")


register(Scenario(
    name="durable",
    title="Durable mode: appendfsync always against everysec",
    measures=_measures(),
    columns=[Column("submit_rate", "submit, one at a time: msgs/s"),
             Column("bulk_rate", "submit_many: msgs/s"),
             Column("drain_rate", "drain: tasks/s"),
             Column("broker_cpu_per_1k", "drain: Valkey CPU s / 1k tasks", "{:.3f}")],
    ratios=[
        _ratio("submit one at a time", "submit_rate", 0.5),
        _ratio("submit_many", "bulk_rate", 0.5),
        # a drain is several writes per task, each waiting for an fsync of its own
        _ratio("drain", "drain_rate", 0.4),
    ],
    run=run,
    chart_metric="drain_rate",
    chart_label="durable: drain tasks/s (higher is better)",
))
