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


#: the taskworks CLI worker exactly as a user starts it, its default topology: one solo
#: process per core under ``taskworks worker`` (two, like the peers' -c 2 / -p 2)
DEFAULT = ["--queues", "default", "--concurrency", "2"]
#: the CLI worker's former default, prefork -c 2, for comparison
PREFORK = ["--queues", "default", "--pool", "prefork", "--concurrency", "2"]
#: the worker group taskworks ships for the default queue (threads x4, prefetch 4)
GENERAL_GROUP = ["--group", "general"]
#: one solo worker process, started on its own (the default topology starts one per core)
SOLO = ["--queues", "default", "--pool", "solo"]


class TaskworksSide:
    def __init__(self, name: str = "taskworks", worker_args: list[str] | None = None,
                 processes: int = 1) -> None:
        self.name = name
        self.worker_args = worker_args or DEFAULT
        self.processes = processes
        self._stage: Taskworks | None = None
        self._client: Taskworks | None = None

    def _overrides(self, env: BenchEnv, url: str) -> dict[str, Any]:
        return {"broker_url": url, "data_dir": env.dir / "data",
                "database_url": f"sqlite:///{env.dir / 'taskworks.db'}"}

    def start(self, env: BenchEnv) -> Workers:
        client = build(**self._overrides(env, env.url))
        upgrade(client.store)  # the journal's tables
        self._client = client
        argv = python("-m", "taskworks", "worker", "--app", "bench.sides.tw_app:tw",
                      *self.worker_args)
        if self.processes == 1:
            return Workers(self.name, [argv], env.worker_env())
        return Workers(self.name, [[*argv, "--hostname", f"w{i}@%h"]
                                   for i in range(self.processes)], env.worker_env())

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
