"""Dramatiq with its Redis broker and default middleware (Results added for latency)."""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

from bench.core import BenchEnv
from bench.procs import Workers, bin_path
from bench.sides.base import RoundTrip, count_done

_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0")
broker = RedisBroker(url=_URL)
broker.add_middleware(Results(backend=RedisBackend(url=_URL)))
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_noop", queue_name="default", max_retries=0)
def noop() -> None:
    count_done()


@dramatiq.actor(actor_name="bench_stamp", queue_name="default", max_retries=0,
                store_results=True)
def stamp() -> float:
    return time.time()


class DramatiqSide:
    name = "Dramatiq"

    def __init__(self) -> None:
        self._stage: RedisBroker | None = None

    def start(self, env: BenchEnv) -> Workers:
        if env.url != _URL:
            raise RuntimeError("set BENCH_BROKER_URL before importing bench.sides.dramatiq_app")
        argv = [bin_path("dramatiq"), "bench.sides.dramatiq_app", "--processes", "2"]
        return Workers(self.name, [argv], env.worker_env())

    def stage(self, env: BenchEnv, n: int) -> None:
        if self._stage is None:
            self._stage = RedisBroker(url=env.stage_url)
            self._stage.declare_queue("default")
        for _ in range(n):
            self._stage.enqueue(noop.message())

    def round_trip(self, env: BenchEnv) -> RoundTrip:
        def once() -> tuple[float, float, float]:
            sent = time.time()
            message = stamp.send()
            started = float(message.get_result(block=True, timeout=30_000))
            return sent, started, time.time()

        return once
