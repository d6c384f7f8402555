"""Celery without taskworks: taskworks' own configuration without its runtime ("off"),
Celery's defaults, and Celery tuned for throughput."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from bench.core import BenchEnv
from bench.procs import Workers, bin_path
from bench.sides.base import RoundTrip, count_done
from bench.sides.celery_publish import publish
from taskworks import topology
from taskworks.settings import load_settings


def _declare(app: Celery) -> Celery:
    @app.task(name="bench.noop", shared=False)
    def noop() -> None:
        count_done()

    @app.task(name="bench.stamp", shared=False)
    def stamp() -> float:
        return time.time()

    return app


def off(url: str) -> Celery:
    """The same Celery configuration taskworks sets, none of its middleware or signals."""
    app = Celery("off", set_as_current=False)
    app.conf.update(topology.celery_config(load_settings(broker_url=url)))
    return _declare(app)


def defaults(url: str) -> Celery:
    return _declare(Celery("defaults", broker=url, backend=url, set_as_current=False))


def tuned(url: str) -> Celery:
    app = Celery("tuned", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_ignore_result=True,  # fire-and-forget: no result write per task
        worker_prefetch_multiplier=64,  # fewer waits for the next message
        worker_disable_rate_limits=True,
        task_acks_late=False,
    )
    return _declare(app)


FACTORIES = {"off_app": off, "defaults_app": defaults, "tuned_app": tuned}
_apps: dict[str, Celery] = {}


def __getattr__(name: str) -> Any:
    # `celery -A bench.sides.celery_apps:off_app` builds only the app it runs
    if name in FACTORIES:
        if name not in _apps:
            _apps[name] = FACTORIES[name](os.environ["BENCH_BROKER_URL"])
        return _apps[name]
    raise AttributeError(name)


class CelerySide:
    def __init__(self, name: str, attribute: str, worker_args: list[str], *,
                 priority: int = 0, processes: int = 1) -> None:
        self.name = name
        self.attribute = attribute
        self.worker_args = worker_args
        self.priority = priority
        self.processes = processes
        self._stage: Celery | None = None
        self._client: Celery | None = None

    def start(self, env: BenchEnv) -> Workers:
        self._client = FACTORIES[self.attribute](env.url)
        argv = [bin_path("celery"), "-A", f"bench.sides.celery_apps:{self.attribute}",
                "worker", "--loglevel", "WARNING", *self.worker_args]
        if self.processes == 1:
            return Workers(self.name, [argv], env.worker_env())
        return Workers(self.name, [[*argv, "--hostname", f"w{i}@%h"]
                                   for i in range(1, self.processes + 1)], env.worker_env())

    def stage(self, env: BenchEnv, n: int) -> None:
        if self._stage is None:
            self._stage = FACTORIES[self.attribute](env.stage_url)
        publish(self._stage, "bench.noop", n, priority=self.priority)

    def round_trip(self, env: BenchEnv) -> RoundTrip:
        assert self._client is not None, "start() first"
        stamp = self._client.tasks["bench.stamp"]

        def once() -> tuple[float, float, float]:
            sent = time.time()
            started = float(stamp.apply_async().get(timeout=30))
            return sent, started, time.time()

        return once


# the same worker flags taskworks' CLI passes to each process of its default topology
# (cli/main.py worker: one solo process per core, two here)
TW_FLAGS = ["--queues", "default", "--pool", "solo", "--concurrency", "1",
            "--prefetch-multiplier", "1", "--without-mingle", "--without-gossip"]


def taskworks_off() -> CelerySide:
    # priority 4: where taskworks' default priority 5 lands on kombu's scale
    return CelerySide("taskworks off", "off_app", TW_FLAGS, priority=4, processes=2)


def celery_defaults() -> CelerySide:
    return CelerySide("Celery defaults", "defaults_app", ["--concurrency", "2"])


def celery_tuned() -> CelerySide:
    return CelerySide("Celery tuned", "tuned_app",
                      ["--pool", "prefork", "--concurrency", "2", "--without-mingle",
                       "--without-gossip", "--without-heartbeat", "-O", "fair"])
