"""Circuit breaker: the admission decision and a guarded call, taskworks vs pybreaker.

Both sides keep their state in the same embedded Valkey, in the same run, one client,
calls one after another (loopback). taskworks decides admission with one EVALSHA and
reports an outcome with another; pybreaker's CircuitRedisStorage reads and writes plain
keys. Target: taskworks admission p50 <= 0.3 ms.

Standalone: ``python -m bench.scenarios.breaker [--size tiny|full]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from bench.core import (
    BenchEnv,
    Column,
    Figure,
    Ratio,
    Scenario,
    Sizes,
    percentile,
    register,
)

TARGET_P50_MS = 0.3


def _noop() -> int:
    return 1


def _timed(fn: Callable[[], Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def _commands(env: BenchEnv, fn: Callable[[], Any], n: int) -> float:
    before = env.commandstats()
    for _ in range(n):
        fn()
    after = env.commandstats()
    total = sum(v - before.get(k, 0) for k, v in after.items() if k != "info")
    return total / n


def _sides(env: BenchEnv) -> list[tuple[str, Callable[[], Any], Callable[[], Any]]]:
    """(side, admission decision, guarded no-op call) for each side."""
    import pybreaker

    from taskworks.resilience.breaker import CircuitBreaker

    ours = CircuitBreaker("bench", env.redis, failure_threshold=5, reset_timeout=30)
    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, env.redis,
                                            namespace="bench")
    theirs = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, state_storage=storage)
    return [
        ("taskworks", ours.try_admit, lambda: ours.call(_noop)),
        # pybreaker decides on the state it reads from Redis (the `state` property)
        ("pybreaker (Redis storage)", lambda: theirs.state, lambda: theirs.call(_noop)),
    ]


def run(env: BenchEnv, sizes: Sizes) -> list[Figure]:
    n = sizes.latency_iterations * 5
    figures = []
    for side, admit, call in _sides(env):
        figure = Figure("breaker", side)
        _timed(admit, max(50, n // 10))  # warm-up: connections, script cache
        _timed(call, max(50, n // 10))
        for _ in range(sizes.runs):
            admissions = _timed(admit, n)
            calls = _timed(call, n)
            figure.add(admit_p50=percentile(admissions, 50), admit_p99=percentile(admissions, 99),
                       call_p50=percentile(calls, 50), call_p99=percentile(calls, 99),
                       admit_commands=_commands(env, admit, 200),
                       call_commands=_commands(env, call, 200))
        figures.append(figure)
    return figures


SCENARIO = register(Scenario(
    name="breaker",
    title="Circuit breaker admission (state in Redis)",
    measures="One client, sequential calls on loopback, closed breaker. Admission: the "
             "decision whether a call may go through (taskworks: one EVALSHA; pybreaker: its "
             "state read from CircuitRedisStorage). Guarded call: admission, a no-op call and "
             "the success report. Server commands count those a Lua script runs too; each "
             "taskworks operation is one round trip (pybreaker: one per command).",
    columns=[Column("admit_p50", "admit p50 ms", "{:.3f}"),
             Column("admit_p99", "admit p99 ms", "{:.3f}"),
             Column("call_p50", "guarded call p50 ms", "{:.3f}"),
             Column("call_p99", "guarded call p99 ms", "{:.3f}"),
             Column("admit_commands", "server commands / admit", "{:.1f}"),
             Column("call_commands", "server commands / call", "{:.1f}")],
    ratios=[Ratio("taskworks / pybreaker, guarded call p50", "breaker", "call_p50",
                  "taskworks", "pybreaker (Redis storage)", 1.0, higher_is_better=False)],
    run=run,
    chart_metric="admit_p50",
    chart_label="breaker: admission p50 ms (lower is better)",
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
        cells = ", ".join(f"{c.title} {c.fmt.format(figure.median(c.metric))}"
                          for c in SCENARIO.columns)
        print(f"{figure.side}: {cells}")
    ours = next(f for f in figures if f.side == "taskworks").median("admit_p50") or 0.0
    print(f"taskworks admission p50 {ours:.3f} ms (target <= {TARGET_P50_MS} ms): "
          f"{'met' if ours <= TARGET_P50_MS else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
