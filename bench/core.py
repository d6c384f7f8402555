"""What every scenario shares: sizes, the one embedded Valkey, figures and the registry."""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from taskworks.broker.embedded import EmbeddedBroker

ROOT = Path(__file__).resolve().parents[1]
#: the database the worker processes consume from; staging happens in another
WORK_DB = 0
STAGE_DB = 1
#: the counter every drain task increments: how the harness knows all work is done
DONE_KEY = "bench:done"
#: commands the harness itself sends while measuring, left out of "commands per task"
#: (the rest it sends inside a measurement is subtracted by exact count)
HARNESS_COMMANDS = frozenset({"info"})


@dataclass(frozen=True)
class Sizes:
    drain_tasks: int
    enqueue_tasks: int
    latency_iterations: int
    runs: int
    warmup_tasks: int
    #: the large backlog of the backlog scenario (its small one is drain_tasks)
    backlog_tasks: int
    #: delayed tasks the scheduling scenario keeps scheduled (its window scales with it)
    scheduled_tasks: int

    @classmethod
    def named(cls, name: str, runs: int | None = None) -> Sizes:
        if name == "full":
            return cls(20_000, 20_000, 2_000, runs or 3, 1_000, backlog_tasks=1_000_000,
                       scheduled_tasks=100_000)
        if name == "small":  # a quick look while working on something
            return cls(2_000, 2_000, 200, runs or 3, 200, backlog_tasks=50_000,
                       scheduled_tasks=10_000)
        if name == "tiny":
            return cls(50, 50, 20, runs or 1, 10, backlog_tasks=300, scheduled_tasks=200)
        raise ValueError(f"size: expected full, small or tiny, got {name!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BenchEnv:
    """The one embedded Valkey of a run, its clients and the environment of workers.

    Everything a run writes (the AOF, the SQLite store: about 184 MB after a full-size
    map-reduce run) lives in one temporary directory, which ``close`` deletes: use it as
    ``with BenchEnv() as env:``. The report is built from the figures, never from it.
    """

    def __init__(self) -> None:
        #: milliseconds every drain task sleeps before it counts itself done (0: a no-op);
        #: the io scenario sets it while its workers start (``BENCH_TASK_SLEEP_MS``)
        self.task_sleep_ms = 0.0
        self.dir = Path(tempfile.mkdtemp(prefix="tw-bench-"))
        # fsync 'everysec' as the taskworks default; no fsync-per-write distortion
        self.broker = EmbeddedBroker(self.dir / "data", port=free_port())
        try:
            server, _ = self.broker.start()
            self.server = server
            self.url = server.url.rsplit("/", 1)[0] + f"/{WORK_DB}"
            self.stage_url = server.url.rsplit("/", 1)[0] + f"/{STAGE_DB}"
            self.redis = redis.Redis.from_url(self.url)
            self.stage = redis.Redis.from_url(self.stage_url)
            self.broker_process = psutil.Process(server.pid)
        except BaseException:  # no half-started Valkey, no directory left behind
            self.broker.stop()
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def __enter__(self) -> BenchEnv:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def worker_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKWORKS_", "BENCH_"))}
        env.update({
            "BENCH_BROKER_URL": self.url,
            "TASKWORKS_BROKER_URL": self.url,
            "TASKWORKS_DATA_DIR": str(self.dir / "data"),
            "TASKWORKS_DATABASE_URL": f"sqlite:///{self.dir / 'taskworks.db'}",
            "TASKWORKS_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        })
        if self.task_sleep_ms:
            env["BENCH_TASK_SLEEP_MS"] = str(self.task_sleep_ms)
        env.update(extra)
        return env

    def reset(self) -> None:
        self.redis.flushall()

    def commandstats(self) -> dict[str, int]:
        stats = self.redis.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    def broker_cpu(self) -> float:
        t = self.broker_process.cpu_times()
        return float(t.user + t.system)

    def close(self) -> None:
        """Stop Valkey (it waits for the process to exit), then delete the directory.
        Safe to call twice."""
        try:
            self.redis.close()
            self.stage.close()
            self.broker.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def measured(env: BenchEnv, cpu: Callable[[], float], exclude: dict[str, int] | None = None
             ) -> Iterator[dict[str, float]]:
    """Wall time, CPU seconds of ``cpu()`` and Redis commands across the block.

    ``exclude`` counts commands the harness sent inside the block (polls), by name.
    """
    out: dict[str, float] = {}
    before = env.commandstats()
    cpu0, broker0 = cpu(), env.broker_cpu()
    t0 = time.perf_counter()
    yield out
    out.setdefault("wall", time.perf_counter() - t0)
    out["cpu"] = cpu() - cpu0
    out["broker_cpu"] = env.broker_cpu() - broker0
    after = env.commandstats()
    total = 0
    for name, calls in after.items():
        if name in HARNESS_COMMANDS:
            continue
        total += calls - before.get(name, 0) - (exclude or {}).get(name, 0)
    out["commands"] = total


def wait_for_count(env: BenchEnv, key: str, target: int, timeout: float,
                   polls: dict[str, int], interval: float = 0.002) -> float:
    """Poll a counter until it reaches ``target``; returns the moment it did."""
    deadline = time.monotonic() + timeout
    while True:
        polls["get"] = polls.get("get", 0) + 1
        value = env.redis.get(key)
        if value is not None and int(value) >= target:
            return time.perf_counter()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} reached {value!r} of {target} in {timeout}s")
        time.sleep(interval)


# -- figures ----------------------------------------------------------------------------
@dataclass
class Figure:
    """One side's measurements in one scenario: one sample per run for each metric."""

    scenario: str
    side: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""

    def add(self, **values: float) -> None:
        for name, value in values.items():
            self.samples.setdefault(name, []).append(value)

    def median(self, metric: str) -> float | None:
        values = self.samples.get(metric)
        return statistics.median(values) if values else None


@dataclass(frozen=True)
class Ratio:
    """``numerator / denominator`` of one metric; higher_is_better decides the direction."""

    name: str
    scenario: str
    metric: str
    numerator: str
    denominator: str
    target: float
    #: for latency the ratio is taskworks/other and must stay *below* the target
    higher_is_better: bool = True

    def value(self, figures: list[Figure]) -> float | None:
        by_side = {f.side: f for f in figures if f.scenario == self.scenario}
        num, den = by_side.get(self.numerator), by_side.get(self.denominator)
        if num is None or den is None:
            return None
        a, b = num.median(self.metric), den.median(self.metric)
        if a is None or not b:
            return None
        return a / b

    def met(self, figures: list[Figure]) -> bool | None:
        value = self.value(figures)
        if value is None:
            return None
        return value >= self.target if self.higher_is_better else value <= self.target


@dataclass(frozen=True)
class Column:
    metric: str
    title: str
    fmt: str = "{:,.0f}"


@dataclass
class Scenario:
    """A registered scenario: ``run`` returns one Figure per side."""

    name: str
    title: str
    measures: str
    columns: list[Column]
    ratios: list[Ratio]
    run: Callable[[BenchEnv, Sizes], list[Figure]]
    #: the metric the chart shows, and whether higher is better
    chart_metric: str = ""
    chart_label: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    if scenario.name in SCENARIOS:
        raise ValueError(f"scenario {scenario.name!r} registered twice")
    SCENARIOS[scenario.name] = scenario
    return scenario


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
