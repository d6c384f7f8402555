"""The floor: a bare LPUSH/BRPOP loop in Python, JSON messages, no framework at all.

``python -m bench.sides.bare`` is the worker: it pops a message, runs the no-op (the
same INCR as every side) or answers a stamp on the message's reply list.
"""

from __future__ import annotations

import json
import os
import time
import uuid

import redis

from bench.core import DONE_KEY, BenchEnv
from bench.procs import Workers, python
from bench.sides.base import RoundTrip

QUEUE = "bare:queue"


def work(url: str) -> None:
    client = redis.Redis.from_url(url)
    while True:
        _, raw = client.brpop([QUEUE])  # type: ignore[misc]
        message = json.loads(raw)
        if message["task"] == "noop":
            client.incr(DONE_KEY)
        else:
            client.lpush(message["reply"], json.dumps(time.time()))


class BareSide:
    name = "bare loop"

    def start(self, env: BenchEnv) -> Workers:
        argv = python("-m", "bench.sides.bare")
        return Workers(self.name, [argv, argv], env.worker_env())

    def stage(self, env: BenchEnv, n: int) -> None:
        pipe = env.stage.pipeline(transaction=False)
        for _ in range(n):
            pipe.lpush(QUEUE, json.dumps({"id": str(uuid.uuid4()), "task": "noop",
                                          "args": [], "kwargs": {}}))
            if len(pipe) >= 1000:
                pipe.execute()
        pipe.execute()

    def round_trip(self, env: BenchEnv) -> RoundTrip:
        client = env.redis

        def once() -> tuple[float, float, float]:
            task_id = str(uuid.uuid4())
            reply = f"bare:reply:{task_id}"
            sent = time.time()
            client.lpush(QUEUE, json.dumps({"id": task_id, "task": "stamp", "args": [],
                                            "kwargs": {}, "reply": reply}))
            answer = client.brpop([reply], timeout=30)
            if answer is None:
                raise TimeoutError("the bare worker did not answer in 30 s")
            return sent, float(json.loads(answer[1])), time.time()

        return once


if __name__ == "__main__":
    work(os.environ["BENCH_BROKER_URL"])
