"""Idempotency overhead per task: Redis round trips and commands, with and without it.

Two measurements on the same embedded Valkey:

* hot path, in process: IdempotencyMiddleware's before_task + after_success around a
  no-op, on a client whose connection counts what it sends (one send = one round trip);
  a first execution (acquire, store) and a duplicate (stored result returned).
* real workers (taskworks CLI, prefork -c 2): N tasks of a plain task and of the same task
  with ``idempotent=True``, server commands per task from INFO commandstats deltas
  (commands a Lua script runs count too; EVALSHA is the script round trip).

Target: at most one extra round trip per task on the hot path before the body.

Standalone: ``python -m bench.scenarios.idempotency [--size tiny|full]``.
"""

from __future__ import annotations

import os
import sys
import time
from types import SimpleNamespace
from typing import Any

import redis

from bench.core import (
    DONE_KEY,
    BenchEnv,
    Column,
    Figure,
    Scenario,
    Sizes,
    measured,
    percentile,
    register,
    wait_for_count,
)
from bench.procs import Workers, python
from taskworks import Taskworks
from taskworks.resilience.idempotency import IdempotencyMiddleware
from taskworks.runtime.middleware import TaskContext
from taskworks.settings import load_settings


# -- the worker app ---------------------------------------------------------------------
def build(**overrides: Any) -> Taskworks:
    tw = Taskworks(settings=load_settings(**overrides)) if overrides else Taskworks()

    clients: dict[int, redis.Redis] = {}

    def work(i: int) -> int:
        client = clients.get(os.getpid())  # one client per pool process
        if client is None:
            client = clients[os.getpid()] = redis.Redis.from_url(
                tw.settings.effective_broker_url)
        client.incr(DONE_KEY)
        return i

    tw.task(name="bench.idem.plain")(work)
    tw.task(name="bench.idem.on", idempotent=True)(work)
    return tw


_tw: Taskworks | None = None


def __getattr__(name: str) -> Any:
    global _tw
    if name == "tw":  # built on first use: importing the scenario builds nothing
        if _tw is None:
            _tw = build()
        return _tw
    raise AttributeError(name)


# -- hot path, in process ---------------------------------------------------------------
class CountingConnection(redis.Connection):
    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


def _context(i: int) -> TaskContext:
    task = SimpleNamespace(request=SimpleNamespace())
    return TaskContext(task=task, task_id=f"bench-{i}", name="bench.idem.on", queue=None,
                       args=(i,), kwargs={}, attempt=1, options={"idempotent": True},
                       hostname=None)


def hot_path(env: BenchEnv, n: int) -> dict[str, float]:
    middleware = IdempotencyMiddleware(env.url, ttl_seconds=600, lease_seconds=30,
                                       wait_interval=0.5, max_hold=60)
    middleware.client.connection_pool.connection_class = CountingConnection
    middleware.client.connection_pool.reset()

    def once(i: int) -> None:
        ctx = _context(i)
        middleware.before_task(ctx)
        if not ctx.answered:
            ctx.result = i
        middleware.after_success(ctx)

    once(-1)  # warm-up: connection, script load
    out: dict[str, float] = {}
    for label, offset in (("first", 0), ("duplicate", 0)):
        latencies = []
        sends0 = CountingConnection.sends
        for i in range(offset, offset + n):
            t0 = time.perf_counter()
            once(i)
            latencies.append((time.perf_counter() - t0) * 1000)
        out[f"{label}_round_trips"] = (CountingConnection.sends - sends0) / n
        out[f"{label}_p50"] = percentile(latencies, 50)
        out[f"{label}_p99"] = percentile(latencies, 99)
    middleware.renewer.stop()
    return out


# -- real workers -------------------------------------------------------------------------
def through_workers(env: BenchEnv, n: int) -> dict[str, float]:
    overrides = {"broker_url": env.url, "data_dir": env.dir / "data",
                 "database_url": f"sqlite:///{env.dir / 'taskworks.db'}"}
    client = build(**overrides)
    from taskworks.store.migrate import upgrade

    upgrade(client.store)
    argv = python("-m", "taskworks", "worker", "--app", "bench.scenarios.idempotency:tw",
                  "--queues", "default", "--pool", "prefork", "--concurrency", "2")
    workers = Workers("idempotency", [argv], env.worker_env())
    out: dict[str, float] = {}
    try:
        for name, label in (("bench.idem.plain", "plain"), ("bench.idem.on", "idempotent")):
            for phase in ("warm-up", "measured"):
                env.redis.set(DONE_KEY, 0)
                polls: dict[str, int] = {"set": 0}
                count = max(20, n // 10) if phase == "warm-up" else n
                start = 10**6 if phase == "warm-up" else 0  # distinct calls each phase
                with measured(env, workers.cpu_seconds, exclude=polls) as m:
                    for i in range(start, start + count):
                        client.submit(name, [i])
                    wait_for_count(env, DONE_KEY, count, timeout=max(120, count / 20),
                                   polls=polls)
                workers.check_alive()
            out[f"{label}_commands"] = m["commands"] / n
        out["extra_commands"] = out["idempotent_commands"] - out["plain_commands"]
    finally:
        workers.stop()
    return out


def run(env: BenchEnv, sizes: Sizes) -> list[Figure]:
    env.reset()
    figure = Figure("idempotency", "taskworks")
    for _ in range(sizes.runs):
        hot = hot_path(env, sizes.latency_iterations)
        env.reset()
        real = through_workers(env, sizes.drain_tasks // 10)
        env.reset()
        figure.add(**hot, plain_commands=real["plain_commands"],
                   idempotent_commands=real["idempotent_commands"],
                   extra_commands=real["extra_commands"])
    return [figure]


SCENARIO = register(Scenario(
    name="idempotency",
    title="Idempotent tasks: overhead per task",
    measures="Hot path: IdempotencyMiddleware around a no-op in process, client round trips "
             "counted at the socket (first execution: acquire + store; duplicate: one call "
             "returning the stored result). Workers: server commands per task from INFO "
             "commandstats, a plain task vs the same task with idempotent=True (scripts' "
             "inner commands included).",
    columns=[Column("first_round_trips", "round trips / first run", "{:.2f}"),
             Column("duplicate_round_trips", "round trips / duplicate", "{:.2f}"),
             Column("first_p50", "first run p50 ms", "{:.3f}"),
             Column("duplicate_p50", "duplicate p50 ms", "{:.3f}"),
             Column("plain_commands", "commands / plain task", "{:.1f}"),
             Column("idempotent_commands", "commands / idempotent task", "{:.1f}"),
             Column("extra_commands", "extra commands / task", "{:.1f}")],
    ratios=[],
    run=run,
    chart_metric="first_round_trips",
    chart_label="idempotency: Redis round trips per first execution",
))


def main() -> int:
    size = sys.argv[sys.argv.index("--size") + 1] if "--size" in sys.argv else "full"
    sizes = Sizes.named(size)
    env = BenchEnv()
    try:
        figures = run(env, sizes)
    finally:
        env.close()
    for figure in figures:
        print(", ".join(f"{c.title} {c.fmt.format(figure.median(c.metric))}"
                        for c in SCENARIO.columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
