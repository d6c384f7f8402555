"""taskworks with its whole runtime: journal on (SQLite), retry, severity, dead letters."""

from __future__ import annotations

import time
from typing import Any

from bench.core import BenchEnv
from bench.procs import Workers, python
from bench.sides.base import RoundTrip, count_done
from taskworks import Taskworks
from taskworks.settings import load_settings
from taskworks.store.migrate import upgrade


def build(**overrides: Any) -> Taskworks:
    tw = Taskworks(settings=load_settings(**overrides)) if overrides else Taskworks()

    @tw.task(name="bench.noop")
    def noop() -> None:
        count_done()

    @tw.task(name="bench.stamp")
    def stamp() -> float:
        return time.time()

    return tw


_tw: Taskworks | None = None


def __getattr__(name: str) -> Any:
    # built on first use, so that importing this module for its Side builds nothing
    global _tw
    if name == "tw":
        if _tw is None:
            _tw = build()
        return _tw
    raise AttributeError(name)


def worker_command(concurrency: int = 2) -> list[str]:
    """The taskworks CLI worker, prefork, exactly as a user would start it."""
    return python("-m", "taskworks", "worker", "--app", "bench.sides.tw_app:tw",
                  "--queues", "default", "--pool", "prefork", "--concurrency", str(concurrency))


class TaskworksSide:
    name = "taskworks"

    def __init__(self) -> None:
        self._stage: Taskworks | None = None
        self._client: Taskworks | None = None

    def _overrides(self, env: BenchEnv, url: str) -> dict[str, Any]:
        return {"broker_url": url, "data_dir": env.dir / "data",
                "database_url": f"sqlite:///{env.dir / 'taskworks.db'}"}

    def start(self, env: BenchEnv) -> Workers:
        client = build(**self._overrides(env, env.url))
        upgrade(client.store)  # the journal's tables
        self._client = client
        return Workers(self.name, [worker_command()], env.worker_env())

    def stage(self, env: BenchEnv, n: int) -> None:
        if self._stage is None:
            self._stage = build(**self._overrides(env, env.stage_url))
        self._stage.submit_many("bench.noop", [[] for _ in range(n)])

    def round_trip(self, env: BenchEnv) -> RoundTrip:
        assert self._client is not None, "start() first"
        tw = self._client

        def once() -> tuple[float, float, float]:
            sent = time.time()
            started = float(tw.submit("bench.stamp").get(timeout=30))
            return sent, started, time.time()

        return once
