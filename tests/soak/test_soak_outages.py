"""The outage soak: the soak's tasks and worker kills on PostgreSQL, plus the store stopped
for 10 s and the broker restarted mid-run.

A private PostgreSQL (stopped and started for real) is the store, and a private Valkey
the broker: it is stopped (SIGTERM: it writes its append-only file) and started again on
the same port and data dir. Both are the test's own (and so is the app that submits, on
that broker), so the test runs alongside the others: no other test meets the outages.
Every check of the main soak applies (tests/soak/harness.py). An outage may requeue a
task (docs/runtime.md: an outcome that cannot be recorded is not acknowledged): a plain
task's body then runs again, an idempotent one answers from its stored result; either
way its outcome is recorded once.
``TASKWORKS_SOAK_OUTAGE_TASKS`` sizes the run (6,000). See docs/soak.md.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.exc import SQLAlchemyError

from taskworks import Taskworks, keys
from taskworks.broker.embedded import EmbeddedBroker
from taskworks.runtime.dlq import DeadLetterStore
from taskworks.settings import load_settings
from taskworks.store.engine import Store
from tests.soak import harness, soak_tasks
from tests.soak.harness import STALLED_AFTER, WORKER_ENV, Chaos
from tests.support.postgres import PostgresServer, free_port
from tests.support.workers import WorkerProcess

pytestmark = pytest.mark.postgres

TASKS = int(os.environ.get("TASKWORKS_SOAK_OUTAGE_TASKS", "6000"))
#: one call in this many always fails (the main soak: 400), so that the store outage
#: also meets dead letters it cannot write
ALWAYS_FAIL_EVERY = 10
#: plain and idempotent calls interleaved this many at a time (the main soak: 1,000), so
#: that an outage meets both kinds
CHUNK = 5
FINISH_WITHIN = 300.0
#: seconds PostgreSQL stays stopped, and the broker
STORE_DOWN = 10.0
BROKER_DOWN = 3.0
#: an outage begins once this share of the tasks has an outcome: always mid-run
STORE_OUTAGE_AT = 0.25
BROKER_OUTAGE_AT = 0.6
#: Redis errors a task sees while the broker is down or loading its append-only file: an
#: attempt that failed with one failed for a reason the prediction cannot know
BROKER_DOWN_ERRORS = frozenset({"ConnectionError", "TimeoutError", "BusyLoadingError"})
#: a task is exempt from the exact-state check for a kill only when the killed process
#: wrote one of its rows at most this long before it died (the main soak exempts every
#: task a later-killed process touched: in a short run, nearly all of them)
KILL_WINDOW = 2.0


@dataclass
class Outages:
    """Stops the store, then the broker, each once, when the run reaches their share of
    outcomes; starts each again after its downtime. Never blocks longer than a stop or a
    start, so the kills go on during an outage."""

    postgres: PostgresServer
    broker: EmbeddedBroker
    #: name -> [down at, up at] (monotonic); up at is 0.0 while it is down
    windows: dict[str, list[float]] = field(default_factory=dict)

    def tick(self, done: int | None) -> None:
        now = time.monotonic()
        store, broker = self.windows.get("store"), self.windows.get("broker")
        if store is None:
            if done is not None and done >= STORE_OUTAGE_AT * TASKS:
                self.windows["store"] = [now, 0.0]
                self.postgres.stop()
        elif not store[1]:
            if now - store[0] >= STORE_DOWN:
                self.postgres.start()
                store[1] = time.monotonic()
        elif broker is None:
            if done is not None and done >= BROKER_OUTAGE_AT * TASKS:
                self.windows["broker"] = [now, 0.0]
                self.broker.stop()
        elif not broker[1] and now - broker[0] >= BROKER_DOWN:
            self.broker.start()
            broker[1] = time.monotonic()

    def over(self) -> bool:
        return len(self.windows) == 2 and all(up for _, up in self.windows.values())

    def end(self) -> None:
        """Whatever happened, both run again: the checks read them."""
        if self.broker.running() is None:
            self.broker.start()
        store = self.windows.get("store")
        if store is not None and not store[1]:
            self.postgres.start()
        for window in self.windows.values():
            window[1] = window[1] or time.monotonic()

    def describe(self, began: float) -> str:
        return ", ".join(f"{name} down {up - down:.1f}s at +{down - began:.0f}s"
                         for name, (down, up) in self.windows.items())


def _done(store: Store) -> int | None:
    try:
        return harness.done_rows(store)
    except SQLAlchemyError:
        return None  # the store is down: no news


def _idle(client: redis.Redis) -> bool:
    try:
        return harness.broker_idle(client)
    except redis.RedisError:
        return False  # the broker is down: its messages wait in its append-only file


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A Valkey of the test's own (append-only, as `taskworks up` runs it)."""
    broker = EmbeddedBroker(tmp_path / "broker", port=free_port())
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.timeout(int(FINISH_WITHIN) + 180)
def test_outage_soak_store_and_broker_outages_on_top_of_kills(
    tmp_path: Path, private_postgres: PostgresServer, private_broker: EmbeddedBroker,
) -> None:
    began = time.monotonic()
    server = private_broker.running()
    assert server is not None
    env = {**os.environ, **WORKER_ENV, "TASKWORKS_BROKER_URL": server.url,
           "TASKWORKS_DATABASE_URL": private_postgres.url}
    # the app that submits and pings: the workers' configuration, on the private parts
    tw = Taskworks(settings=load_settings(broker_url=server.url,
                                          database_url=private_postgres.url))
    soak_tasks.register(tw)
    redis_client = redis.Redis.from_url(server.url, decode_responses=True)
    started: list[WorkerProcess] = []

    def start_worker(queues: list[str], *, env: dict[str, str], ready: bool = True,
                     **options: Any) -> WorkerProcess:
        worker = WorkerProcess(tw.app, env, queues, log_dir=tmp_path, **options)
        started.append(worker)
        return worker.wait_ready() if ready else worker

    try:
        _run(tw, redis_client, Chaos(start_worker, env=env), private_postgres,
             private_broker, began)
    finally:
        for worker in started:
            worker.stop()
        redis_client.close()


def _run(tw: Any, redis_client: redis.Redis, chaos: Chaos, postgres: PostgresServer,
         broker: EmbeddedBroker, began: float) -> None:
    store = Store(postgres.url)
    chaos.launch_all()
    submitted = harness.submit(tw, TASKS, ALWAYS_FAIL_EVERY, CHUNK)
    assert not harness.broker_idle(redis_client)
    chaos.arm()
    outages = Outages(postgres, broker)
    exited: list[WorkerProcess] = []

    # -- kills and outages until every task has an outcome -------------------------
    deadline = time.monotonic() + FINISH_WITHIN
    progress, idle_since = -1, time.monotonic()
    try:
        while (done := _done(store)) is None or done < TASKS or not outages.over():
            if time.monotonic() > deadline:
                break
            if (done is not None and done != progress) or not _idle(redis_client):
                progress, idle_since = progress if done is None else done, time.monotonic()
            elif time.monotonic() - idle_since > STALLED_AFTER:
                break  # nothing left to run and nothing moves: what is missing is lost
            outages.tick(done)
            chaos.tick()
            exited += chaos.exited()
            time.sleep(0.3)
    finally:
        outages.end()
        # the app's pooled broker connections died with the restart: the checks get
        # fresh ones (what Celery does for a forked child)
        tw.app._after_fork()
    chaos_ended = time.monotonic()
    settle = time.monotonic() + 3 * float(WORKER_ENV["TASKWORKS_VISIBILITY_TIMEOUT"]) + 10
    while not _idle(redis_client) and time.monotonic() < settle:
        time.sleep(0.5)
    for worker, *_ in chaos.workers:
        worker.stop()  # warm: the journal writes what it holds

    # -- what the outages did ----------------------------------------------------------
    requeued = harness.requeues(w.log_path for w in chaos.started)
    where = Counter[str]()
    for counter in requeued.values():
        where.update(counter)
    rows, _ = harness.outcomes(store, DeadLetterStore(store), submitted.ids)
    foreign = {tid: {r.exc_type for r in rs if r.state != "deferred"
                     and r.exc_type not in (None, "TransientError")}
               for tid, rs in rows.items()}
    broker_failed = {tid for tid, types in foreign.items() if types & BROKER_DOWN_ERRORS}
    # nothing in the soak revokes a task: a revoked row is Celery cancelling a running
    # task whose worker lost the broker (worker_cancel_long_running_tasks_on_connection_loss)
    cancelled = {tid for tid, rs in rows.items() if any(r.state == "revoked" for r in rs)}
    # a retry row lands before Celery publishes the retry: when the publish fails, the
    # message is requeued and that attempt runs again, recording its retry row again
    retry_published_again = {tid for tid, counter in requeued.items()
                             if counter["retry publish"]}
    # a plain task requeued after its body succeeded runs its body again (at least
    # once); an idempotent one answers from its stored result (the effects check)
    after_success = Counter("idempotent" if tid in submitted.key_of else "plain"
                            for tid, counter in requeued.items()
                            if counter["JournalBarrier.after_success"])
    summary = (f"{TASKS} tasks in {chaos_ended - began:.0f}s "
               f"(+{time.monotonic() - chaos_ended:.0f}s settling); kills {dict(chaos.kills)}; "
               f"outages: {outages.describe(began)}; requeued {len(requeued)} tasks "
               f"{sum(where.values())} times {dict(where)}, after a success "
               f"{dict(after_success)}; attempts failed by the broker outage "
               f"{len(broker_failed)}, cancelled on its connection loss {len(cancelled)}; "
               f"exited on their own {len(exited)}")
    if (held := int(redis_client.pttl("unacked_mutex"))) > 0:
        # kombu restores no unacknowledged message while a worker holds this lock (up to
        # 300 s when its holder died or lost the broker): lost tasks then wait it out
        summary += f"; kombu's unacked_mutex still held for {held / 1000:.0f}s"

    def explain(task_id: str) -> str:
        """The evidence of one task: its requeues, redeliveries and workers' log lines."""
        lines = [f"{w.hostname}: {line[:400]}" for w in chaos.started
                 for line in w.log_path.read_text(errors="replace").splitlines()
                 if task_id in line]
        return (f"requeued {dict(requeued.get(task_id, {}))}, redelivered "
                f"{redis_client.get(keys.redeliveries(task_id))!r}; logs:\n  "
                + "\n  ".join(lines[:12]))

    harness.verify(store, DeadLetterStore(store), redis_client, tw, submitted,
                   chaos.killed_pids, summary,
                   shifted=broker_failed | cancelled | retry_published_again,
                   killed_at=chaos.killed_at, kill_window=KILL_WINDOW, explain=explain)
    assert outages.over(), f"both outages happen mid-run: {outages.windows}"
    assert requeued, "the store outage requeued no task: it did not test the requeue"
    assert not exited, "workers ended on their own: " + "; ".join(
        f"{w.hostname} exit {w.proc.returncode}: {w.log_path.read_text()[-2000:]}"
        for w in exited)
