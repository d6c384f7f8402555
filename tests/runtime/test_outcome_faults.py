"""Faults while recording an outcome, injected for real: the message is never
acknowledged without its outcome, it comes back, and the outcome is recorded once.

- the store (a private PostgreSQL) stopped while a task's dead letter is written, and
  while a successful task's journal row is made durable;
- the broker refusing writes (Valkey's ``maxmemory`` with ``noeviction``) while Celery
  publishes a retry: Celery would drop the message (``Reject(requeue=False)``); and
  while the requeue that replaces it is made (Celery stopped the worker on it).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from taskworks.store.engine import Store
from taskworks.store.migrate import upgrade
from taskworks.store.tables import DeadLetter, JournalEntry
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess

PROJECT = "tests.apps.celery_project"


@pytest.fixture
def project(tw: Any) -> Any:
    from tests.apps import celery_project

    return celery_project


def _states(store: Store, name: str) -> list[str]:
    with store.session() as session:
        return [row.state for row in session.scalars(
            select(JournalEntry).where(JournalEntry.name == name).order_by(JournalEntry.id))]


def _letters(store: Store, name: str) -> list[DeadLetter]:
    with store.session() as session:
        return list(session.scalars(select(DeadLetter).where(DeadLetter.name == name)))


@pytest.mark.postgres
def test_store_down_while_recording_requeues_and_records_once(
    project: Any, private_postgres: PostgresServer, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    store = Store(private_postgres.url)
    start_worker(["celery"], app_path=PROJECT, celery_cli=True,
                 env={"TASKWORKS_DATABASE_URL": private_postgres.url})
    failing = project.fail_when_released.delay("dl")
    wait_for(lambda: redis_client.get("dl:runs") == "1", what="the failing task to start")
    private_postgres.stop()
    redis_client.set("dl:go", 1)  # it fails for good now, with its dead letter unwritable
    # the message comes back (about once a second) instead of being acknowledged
    wait_for(lambda: int(redis_client.get("dl:runs") or 0) >= 3, timeout=30,
             what="the failing task to be requeued twice")
    private_postgres.start()
    with pytest.raises(ValueError):
        failing.get(timeout=30)
    [letter] = wait_for(lambda: _letters(store, "proj.fail_when_released"), what="the letter")
    # the requeues were taskworks' own, not lost workers: no retry spent on them
    assert (letter.reason, letter.attempts, letter.task_id) == ("failed", 1, failing.id)
    assert wait_for(lambda: _states(store, "proj.fail_when_released")) == ["failure"]

    # a success whose journal row cannot be made durable: the same, recorded once
    succeeding = project.succeed_when_released.delay("ok")
    wait_for(lambda: redis_client.get("ok:runs") == "1", what="the succeeding task to start")
    private_postgres.stop()
    redis_client.set("ok:go", 1)
    wait_for(lambda: int(redis_client.get("ok:runs") or 0) >= 3, timeout=30,
             what="the succeeding task to be requeued twice")
    private_postgres.start()
    assert succeeding.get(timeout=30) == "ok"
    assert wait_for(lambda: _states(store, "proj.succeed_when_released")) == ["success"]
    time.sleep(2)  # nothing arrives late: one row, one letter
    assert _states(store, "proj.succeed_when_released") == ["success"]
    assert _states(store, "proj.fail_when_released") == ["failure"]
    assert len(_letters(store, "proj.fail_when_released")) == 1


def test_sqlite_locked_by_another_process_requeues_and_records_once(
    project: Any, tmp_path: Path, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(url)
    upgrade(store)
    start_worker(["celery"], app_path=PROJECT, celery_cli=True,
                 env={"TASKWORKS_DATABASE_URL": url, "TASKWORKS_SQLITE_BUSY_TIMEOUT": "0.5"})
    failing = project.fail_when_released.delay("lk")
    wait_for(lambda: redis_client.get("lk:runs") == "1", what="the failing task to start")
    # another process holds SQLite's write lock past the worker's busy timeout
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], "
         "isolation_level=None); c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); "
         "sys.stdin.read()", str(tmp_path / "store.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        redis_client.set("lk:go", 1)
        wait_for(lambda: int(redis_client.get("lk:runs") or 0) >= 3, timeout=30,
                 what="the failing task to be requeued twice")
        assert _letters(store, "proj.fail_when_released") == []
    finally:
        assert holder.stdin is not None
        holder.stdin.close()  # the lock goes with the process
        holder.wait(10)
    with pytest.raises(ValueError):
        failing.get(timeout=30)
    [letter] = wait_for(lambda: _letters(store, "proj.fail_when_released"), what="the letter")
    assert (letter.reason, letter.attempts) == ("failed", 1)
    assert wait_for(lambda: _states(store, "proj.fail_when_released")) == ["failure"]


@pytest.fixture
def full_broker(redis_client: redis.Redis) -> Iterator[Callable[[], None]]:
    """Make the broker refuse every write (what a full Valkey with noeviction does)."""
    policy = redis_client.config_get("maxmemory-policy")["maxmemory-policy"]

    def fill() -> None:
        redis_client.config_set("maxmemory-policy", "noeviction")
        redis_client.config_set("maxmemory", 1)

    yield fill
    redis_client.config_set("maxmemory", 0)
    redis_client.config_set("maxmemory-policy", policy)


def test_retry_that_cannot_be_published_is_requeued_not_dropped(
    project: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess], full_broker: Callable[[], None],
) -> None:
    start_worker(["celery"], app_path=PROJECT, celery_cli=True,
                 env={"PROJ_VISIBILITY_TIMEOUT": "4"})
    result = project.retry_when_released.delay("rp")
    wait_for(lambda: redis_client.get("rp:started") == "1", what="the task to start")
    full_broker()  # the task now fails, and Celery cannot publish its retry
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        redis_client.set("probe", 1)
    time.sleep(3)  # the worker tried to publish the retry and to requeue; both refused
    redis_client.config_set("maxmemory", 0)
    # kept unacknowledged, the message comes back after the visibility timeout
    assert result.get(timeout=40) == "done"
    assert redis_client.lrange("rp:log", 0, -1) == ["succeeded"]
    assert wait_for(lambda: _states(store, "proj.retry_when_released")) == ["success"]
    assert _letters(store, "proj.retry_when_released") == []


def test_a_requeue_the_full_broker_refuses_leaves_the_adopted_apps_worker_running(
    project: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess], full_broker: Callable[[], None],
) -> None:
    """The project's own worker on kombu's transport: the retry cannot be published, and
    the requeue that follows (after the runtime's pause) is refused too. Celery stopped
    the worker on that refusal ("Unrecoverable error: OutOfMemoryError"); now it is
    logged, and the message stays unacknowledged in kombu's index until kombu's sweep of
    it (a worker's first one comes 10 s after its start) brings it back."""
    env = {"PROJ_VISIBILITY_TIMEOUT": "4"}
    worker = start_worker(["celery"], app_path=PROJECT, celery_cli=True, env=env)
    result = project.retry_when_released.delay("rr")
    wait_for(lambda: redis_client.get("rr:started") == "1", what="the task to start")
    full_broker()
    wait_for(lambda: b"requeue refused by the broker" in worker.log_path.read_bytes(),
             timeout=20, what="the requeue to be refused")
    time.sleep(0.5)  # what would have stopped the worker comes right after
    assert worker.proc.poll() is None, worker.log_path.read_text()[-2000:]
    assert b"Unrecoverable error" not in worker.log_path.read_bytes()
    redis_client.config_set("maxmemory", 0)
    assert redis_client.hlen("unacked") == 1  # still held, nowhere else
    start_worker(["celery"], app_path=PROJECT, celery_cli=True, env=env)
    assert result.get(timeout=60) == "done"
    assert redis_client.lrange("rr:log", 0, -1) == ["succeeded"]
    assert wait_for(lambda: _states(store, "proj.retry_when_released")) == ["success"]
    assert worker.proc.poll() is None
