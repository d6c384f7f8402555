"""What a side offers the scenarios: workers, a staged backlog, one round trip."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Protocol

import redis

from bench.core import DONE_KEY, BenchEnv
from bench.procs import Workers

#: one closed-loop round trip: (enqueued at, task started at, result received at), time.time()
RoundTrip = Callable[[], tuple[float, float, float]]


class Side(Protocol):
    name: str

    def start(self, env: BenchEnv) -> Workers:
        """Start this side's worker processes (consuming WORK_DB)."""

    def stage(self, env: BenchEnv, n: int) -> None:
        """Publish ``n`` no-op tasks into STAGE_DB through the side's own client API."""


class LatencySide(Side, Protocol):
    def round_trip(self, env: BenchEnv) -> RoundTrip:
        """A function that sends one ``stamp`` task and waits for its result."""


_client: tuple[int, redis.Redis] | None = None
#: what every drain task waits before it counts itself done: 0 (a no-op) but in the io
#: scenario, where it stands for a call to another service (time.sleep releases the GIL,
#: as a socket read does)
_SLEEP = float(os.environ.get("BENCH_TASK_SLEEP_MS") or 0) / 1000


def count_done() -> None:
    """The body of every drain task: one INCR, so the harness knows when all are done
    (after ``BENCH_TASK_SLEEP_MS``, if the workers were started with it)."""
    global _client
    if _SLEEP:
        time.sleep(_SLEEP)
    if _client is None or _client[0] != os.getpid():  # one connection per (forked) process
        _client = (os.getpid(), redis.Redis.from_url(os.environ["BENCH_BROKER_URL"]))
    _client[1].incr(DONE_KEY)
