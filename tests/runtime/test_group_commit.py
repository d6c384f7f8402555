"""The journal's group commit in solo workers (broker/deferral.py): a success's result
and acknowledgement wait for its row, which it shares a commit with the tasks that ended
within ``journal.group_commit_ms``. Real solo workers, a real SQLite store locked from
another connection, a real SIGKILL."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import select

from taskworks import Taskworks
from taskworks.broker.embedded import EmbeddedBroker
from taskworks.monitoring.queues import queue_depths
from taskworks.settings import load_settings
from taskworks.store.engine import Store
from taskworks.store.migrate import upgrade
from taskworks.store.tables import JournalEntry
from tests.support.postgres import free_port
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess


def _rows(store: Store, task_id: str) -> list[str]:
    with store.session() as session:
        return list(session.scalars(select(JournalEntry.state)
                                    .where(JournalEntry.task_id == task_id)))


def _runs(client: redis.Redis, label: str) -> int:
    entries: list[str] = client.lrange("tests:order", 0, -1)  # type: ignore[assignment]
    return sum(entry.split("|")[0] == label for entry in entries)


def test_a_burst_shares_commits_and_each_result_comes_after_its_row(
    tw: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess]
) -> None:
    results = [tw.submit("tests.echo", [i]) for i in range(300)]
    worker = start_worker(["default"], env={"TASKWORKS_LOG_LEVEL": "DEBUG"})
    for i, result in enumerate(results):
        assert result.get(timeout=30) == i
        # read after write: a client that has the result finds the row
        assert _rows(store, result.id) == ["success"], i
    wait_for(lambda: queue_depths(redis_client, ["default"])["default"].unacked == 0,
             what="every message acknowledged")
    log = worker.log_path.read_text()
    written = [int(n) for n in re.findall(r"journal rows written\s+.*?rows=(\d+)", log)]
    assert sum(written) >= 300
    assert max(written) > 1, written  # commits were shared (one per task without it)
    # and so were the round trips of their results
    results = [int(n) for n in re.findall(r"results written together\s+.*?results=(\d+)", log)]
    assert max(results) > 1, results  # (a result whose row landed first goes on its own)


def _private_store(tmp_path: Path) -> tuple[Path, Store, dict[str, str]]:
    path = tmp_path / "private.db"
    store = Store(f"sqlite:///{path}")
    upgrade(store)
    env = {"TASKWORKS_DATABASE_URL": f"sqlite:///{path}",
           "TASKWORKS_SQLITE_BUSY_TIMEOUT": "0.2"}  # "database is locked" sooner
    return path, store, env


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Another connection writing the store for the block: "database is locked"."""
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.rollback()
        holder.close()


def test_a_result_waits_while_the_store_is_locked_and_the_task_runs_once(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess],
    tmp_path: Path
) -> None:
    path, store, env = _private_store(tmp_path)
    with _locked(path):
        # queued before the worker starts: taken by a busy worker, not one that waited
        # for it (which has its task wait for its own row)
        parked = tw.submit("tests.record", ["b"])
        start_worker(["default"], env=env)
        wait_for(lambda: _runs(redis_client, "b") == 1, what="b to run")
        # its row cannot be written (each try gives up after 0.2 s): no result, the
        # message held, and not run again (a task that waits for its own row is requeued
        # after 1 s and runs again)
        time.sleep(2.0)
        assert queue_depths(redis_client, ["default"])["default"].unacked == 1
        assert not parked.ready()
        assert _runs(redis_client, "b") == 1
    assert parked.get(timeout=30)["label"] == "b"
    assert _rows(store, parked.id) == ["success"]
    wait_for(lambda: queue_depths(redis_client, ["default"])["default"].unacked == 0,
             what="b's message acknowledged")
    assert _runs(redis_client, "b") == 1


def test_a_worker_killed_with_a_row_unwritten_loses_nothing(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess],
    tmp_path: Path
) -> None:
    path, store, env = _private_store(tmp_path)
    with _locked(path):
        parked = tw.submit("tests.record", ["k"])  # queued first, as above
        first = start_worker(["default"], env=env)
        wait_for(lambda: "journal write failed" in first.log_path.read_text(),
                 what="k's row to fail to be written")
        first.kill()  # SIGKILL: the row, the result and the acknowledgement die with it
    assert not parked.ready()
    start_worker(["default"], env=env)
    # the message comes back once the dead consumer's heartbeat lapses: its task runs
    # again (its row never landed) and ends once, with its result
    assert parked.get(timeout=40)["label"] == "k"
    assert _rows(store, parked.id) == ["success"]
    assert _runs(redis_client, "k") == 2


def test_a_parked_result_written_while_the_broker_restarts_lands(tmp_path: Path) -> None:
    """The row lands while the broker is down: the parked result write retries (Celery's
    policy, in the journal's thread) until the broker is back, then the message is
    acknowledged. A private broker: it is stopped for real."""
    broker = EmbeddedBroker(tmp_path / "data", port=free_port())
    server, _ = broker.start()
    client = Taskworks(settings=load_settings(broker_url=server.url))
    path, store, env = _private_store(tmp_path)
    env = {**os.environ, **env, "TASKWORKS_BROKER_URL": server.url}
    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")
    parked = client.app.send_task("tests.record", ["r"])  # queued first, as above
    worker = WorkerProcess(client.app, env, ["default"], log_dir=tmp_path)
    try:
        worker.wait_ready()
        wait_for(lambda: "journal write failed" in worker.log_path.read_text(),
                 what="r's row to fail to be written")
        broker.stop()
        holder.rollback()  # the row lands now; its result cannot
        wait_for(lambda: _rows(store, parked.id) == ["success"], what="r's row")
        time.sleep(1.0)
        broker.start()
        assert parked.get(timeout=30)["label"] == "r"
        with redis.Redis.from_url(server.url, decode_responses=True) as r:
            # acknowledged: by the channel that took it, or, that channel lost with the
            # connection, by the outcome guard when the message comes back
            wait_for(lambda: queue_depths(r, ["default"])["default"].unacked == 0,
                     timeout=30, what="r's message acknowledged")
            assert _runs(r, "r") == 1
        assert "an action waiting for its journal row failed" not in \
            worker.log_path.read_text()
    finally:
        holder.close()
        worker.stop()
        broker.stop()
