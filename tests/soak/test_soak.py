"""The soak: 20,000 tasks, 10 % transient failures, workers SIGKILLed every few seconds.

Every task must end succeeded (journal) or dead-lettered, never both, none missing; the
journal must reconcile exactly with the dead-letter store; every idempotent side effect
must happen once per key. ``TASKWORKS_SOAK_TASKS`` shrinks the run for a quick local try.
The checks are in tests/soak/harness.py; tests/soak/test_soak_outages.py adds store and
broker outages. See docs/soak.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.soak.harness import (
    STALLED_AFTER,
    WORKER_ENV,
    Chaos,
    broker_idle,
    done_rows,
    submit,
    verify,
)
from tests.support.workers import WorkerProcess

TASKS = int(os.environ.get("TASKWORKS_SOAK_TASKS", "20000"))
FINISH_WITHIN = 480.0


@pytest.mark.timeout(int(FINISH_WITHIN) + 120)
def test_soak_every_task_ends_once_and_side_effects_happen_once(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    began = time.monotonic()
    chaos = Chaos(start_worker)
    chaos.launch_all()
    submitted = submit(tw, TASKS)
    assert not broker_idle(redis_client)  # the probe sees the backlog it waits out
    chaos.arm()

    # -- chaos until every task has an outcome -------------------------------------
    deadline = time.monotonic() + FINISH_WITHIN
    progress, idle_since = -1, time.monotonic()
    while (done := done_rows(tw.store)) < TASKS:
        if time.monotonic() > deadline:
            break
        if done != progress or not broker_idle(redis_client):
            progress, idle_since = done, time.monotonic()
        elif time.monotonic() - idle_since > STALLED_AFTER:
            break  # nothing left to run and nothing moves: what is missing is lost
        chaos.tick()
        time.sleep(0.3)
    chaos_ended = time.monotonic()
    # late duplicates (a message restored after its task had finished) run now, if any
    settle = time.monotonic() + 3 * float(WORKER_ENV["TASKWORKS_VISIBILITY_TIMEOUT"]) + 10
    while not broker_idle(redis_client) and time.monotonic() < settle:
        time.sleep(0.5)
    for worker, *_ in chaos.workers:
        worker.stop()  # warm: the journal writes what it holds

    verify(tw.store, tw.dead_letters, redis_client, tw, submitted, chaos.killed_pids,
           f"{TASKS} tasks in {chaos_ended - began:.0f}s "
           f"(+{time.monotonic() - chaos_ended:.0f}s settling); kills {dict(chaos.kills)}")
