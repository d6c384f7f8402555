"""RQ: two workers. SimpleWorker runs jobs in the worker process; RQ's default Worker
forks a process per job and is an order of magnitude slower on no-op jobs."""

from __future__ import annotations

import time

import redis
from rq import Queue

from bench.core import BenchEnv
from bench.procs import Workers, bin_path
from bench.sides.base import count_done


def noop() -> None:
    count_done()


def stamp() -> float:
    return time.time()


class RQSide:
    name = "RQ"

    def start(self, env: BenchEnv) -> Workers:
        argv = [bin_path("rq"), "worker", "default", "--url", env.url, "--worker-class",
                "rq.worker.SimpleWorker", "--logging_level", "WARNING",
                "--disable-job-desc-logging"]
        return Workers(self.name, [argv, argv], env.worker_env())

    def stage(self, env: BenchEnv, n: int) -> None:
        queue = Queue("default", connection=redis.Redis.from_url(env.stage_url))
        for start in range(0, n, 1000):
            queue.enqueue_many([Queue.prepare_data(noop) for _ in range(min(1000, n - start))])
