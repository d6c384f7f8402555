"""Beat with a leader lease: real beat and worker processes on the session's Valkey."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest
import redis

from taskworks import keys
from taskworks.scheduling.leader import LeaderLease, LeaderScheduler
from tests.support.workers import ROOT

SCHEDULE = json.dumps({"tick": {"task": "tests.beat_tick", "every": 1, "queue": "default"}})
LEADER_KEY = keys.beat_leader("taskworks")
TICKS = "tests:beat"


@dataclass
class Beat:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def token(self) -> str | None:
        """The lease token this beat logged when it became the leader, if it did."""
        found = re.findall(r"leading=True token=([0-9a-f]{32})", self.log_path.read_text())
        return found[-1] if found else None

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signum)


@pytest.fixture
def start_beat(tmp_path: Path) -> Iterator[Callable[[], Beat]]:
    beats: list[Beat] = []

    def start() -> Beat:
        log_path = tmp_path / f"beat-{len(beats)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "taskworks", "beat", "--app", "tests.apps.sample:tw"],
                env={**os.environ, "TASKWORKS_BEAT_SCHEDULE": SCHEDULE}, cwd=ROOT,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        beats.append(Beat(proc, log_path))
        return beats[-1]

    try:
        yield start
    finally:
        for beat in beats:
            beat.signal(signal.SIGTERM)
        for beat in beats:
            try:
                beat.proc.wait(10)
            except subprocess.TimeoutExpired:
                beat.signal(signal.SIGKILL)
                beat.proc.wait()


def ticks(client: redis.Redis) -> list[float]:
    return [float(t) for t in client.lrange(TICKS, 0, -1)]


def wait_for(condition: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_beat_fires_entry_repeatedly(start_worker: Callable[..., object],
                                     start_beat: Callable[[], Beat],
                                     redis_client: redis.Redis) -> None:
    start_worker(["default"])
    start_beat()
    wait_for(lambda: len(ticks(redis_client)) >= 3, timeout=20)
    fired = ticks(redis_client)
    assert len(fired) >= 3
    assert fired[2] - fired[0] < 5  # every 1 s: three ticks well inside 5 s


def test_two_beats_fire_once_per_interval(start_worker: Callable[..., object],
                                          start_beat: Callable[[], Beat],
                                          redis_client: redis.Redis) -> None:
    start_worker(["default"])
    started = time.time()
    beats = [start_beat(), start_beat()]
    wait_for(lambda: ticks(redis_client), timeout=20)
    time.sleep(8)
    fired = ticks(redis_client)
    elapsed = time.time() - started
    gaps = [b - a for a, b in pairwise(fired)]
    assert len(fired) >= 5
    assert len(fired) <= elapsed + 2, (len(fired), elapsed)
    assert min(gaps) > 0.5, gaps
    holder = redis_client.get(LEADER_KEY)
    assert holder is not None
    assert [beat.token() == holder for beat in beats].count(True) == 1
    assert [beat.token() is None for beat in beats].count(True) == 1  # the other never led


def test_follower_takes_over_when_leader_dies(start_worker: Callable[..., object],
                                              start_beat: Callable[[], Beat],
                                              redis_client: redis.Redis) -> None:
    start_worker(["default"])
    beats = [start_beat(), start_beat()]
    wait_for(lambda: len(ticks(redis_client)) >= 2, timeout=20)
    holder = redis_client.get(LEADER_KEY)
    leader, = (beat for beat in beats if beat.token() == holder)
    follower, = (beat for beat in beats if beat is not leader)

    leader.signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(lambda: follower.token() is not None and
             redis_client.get(LEADER_KEY) == follower.token(), timeout=30)
    took_over = time.monotonic() - killed
    # lease 15 s, plus at most one follower tick (lease / 3) before it retries
    assert follower.token() is not None, follower.log_path.read_text()[-2000:]
    assert took_over <= LeaderScheduler.lease_seconds * 4 / 3 + 1, took_over

    resumed = time.time()
    wait_for(lambda: ticks(redis_client)[-1] > resumed, timeout=5)
    assert ticks(redis_client)[-1] > resumed


def test_leader_lease(redis_client: redis.Redis) -> None:
    a = LeaderLease(redis_client, "tests:lease", lease_seconds=5)
    b = LeaderLease(redis_client, "tests:lease", lease_seconds=5)
    assert (a.hold(), b.hold()) == (True, False)
    assert redis_client.get("tests:lease") == a.token
    assert a.hold() is True  # renewing
    a.release()
    assert redis_client.get("tests:lease") is None
    assert (b.hold(), a.hold()) == (True, False)
    a.release()  # releasing a lease one does not hold leaves the holder alone
    assert redis_client.get("tests:lease") == b.token

    c = LeaderLease(redis_client, "tests:short", lease_seconds=0.3)
    d = LeaderLease(redis_client, "tests:short", lease_seconds=0.3)
    assert c.hold() is True
    for _ in range(6):  # renewed every 0.1 s, the lease outlives its 0.3 s
        time.sleep(0.1)
        assert (c.hold(), d.hold()) == (True, False)
    time.sleep(0.4)  # no renewal: the lease expires and the other takes over
    assert (d.hold(), c.hold()) == (True, False)
    assert (c.leading, d.leading) == (False, True)
