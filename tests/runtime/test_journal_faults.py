"""Faults of the journal writer on real databases: one bad row never holds back its batch,
an unavailable database keeps the rows pending until it is back, ``discard`` takes back a
pending row. And a dead letter of a workflow step, with NUL bytes in its error, is stored."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from taskworks.runtime.dlq import DeadLetterStore
from taskworks.runtime.journal import JournalWriter
from taskworks.runtime.journal import writer as journal_writer
from taskworks.runtime.middleware import TaskContext
from taskworks.store import engine as store_engine
from taskworks.store.engine import Store
from taskworks.store.migrate import upgrade
from taskworks.store.tables import JournalEntry
from tests.support.postgres import PostgresServer
from tests.support.wait import wait_for

ON_POSTGRES = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
SECRET = "s3cret-argument"


def row(task_id: str | None = None, **values: Any) -> dict[str, Any]:
    return {"task_id": task_id or uuid.uuid4().hex, "name": "tests.echo", "queue": "default",
            "state": "success", "attempt": 1, "args": [SECRET], "kwargs": {}, "result": None,
            "exc_type": None, "exc_message": None, "traceback": None, "severity": None,
            "hostname": "host", "pid": 1, "started_at": None,
            "finished_at": datetime.now(UTC), "duration_ms": 1.0, **values}


def step_id() -> str:
    """The id of a workflow step with a timeout: <token>.<step name>, 161 characters."""
    return f"{uuid.uuid4().hex}.{'s' * 128}"


def stored(store: Store) -> list[JournalEntry]:
    with store.session() as session:
        return list(session.scalars(select(JournalEntry).order_by(JournalEntry.id)))


class Lines:
    """Stands in for the journal's logger: what it said, with which fields."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.lines.append((level, event, fields))

    def about(self, event: str) -> list[dict[str, Any]]:
        return [fields for _, said, fields in self.lines if said.startswith(event)]


@pytest.fixture
def logged(monkeypatch: pytest.MonkeyPatch) -> Lines:
    lines = Lines()
    monkeypatch.setattr(journal_writer, "log", lines)  # the writer's log
    return lines


@pytest.fixture
def writers() -> Iterator[list[JournalWriter]]:
    made: list[JournalWriter] = []
    yield made
    for writer in made:
        writer.close()


def make_writer(store: Store, writers: list[JournalWriter]) -> JournalWriter:
    # only the test flushes: no batch fills up, no interval passes
    writer = JournalWriter(store, batch_size=1_000_000, flush_interval=3600)
    writers.append(writer)
    return writer


@pytest.mark.postgres
@ON_POSTGRES
def test_a_step_id_and_a_nul_byte_never_hold_back_their_batch(
    database_url: str, logged: Lines, writers: list[JournalWriter],
) -> None:
    store = Store(database_url)
    writer = make_writer(store, writers)
    good = [row() for _ in range(3)]
    nul = row(state="failure", exc_type="ValueError", exc_message="bad\x00byte",
              traceback="Traceback\x00(most recent call last)",
              args=["a\x00b", {"k\x00": ["v\x00"]}], kwargs={"n\x00": "x\x00y"})
    step = row(step_id())
    numbers = [writer.add(r) for r in (good[0], nul, step, good[1], good[2])]

    # no schema yet: the schema's fault, not the rows'; they wait
    assert writer.flush() == 0
    assert writer.rejected_rows == 0
    assert logged.about("journal write failed; rows kept")

    upgrade(store, "0005")  # task_id is varchar(64) there: the step's row does not fit
    assert writer.flush() == 4
    assert writer.rejected_rows == 1
    assert [writer.wait_written(n) for n in numbers] == [True, True, False, True, True]
    rows = stored(store)
    assert [r.task_id for r in rows] == [good[0]["task_id"], nul["task_id"],
                                         good[1]["task_id"], good[2]["task_id"]]
    assert rows[1].exc_message == "badbyte"
    assert rows[1].traceback == "Traceback(most recent call last)"
    assert rows[1].args == ["ab", {"k": ["v"]}]
    assert rows[1].kwargs == {"n": "xy"}
    [refused] = logged.about("journal row refused")
    assert refused["task_id"] == step["task_id"]
    assert refused["task"] == "tests.echo"
    assert "value too long" in refused["error"]
    assert SECRET not in repr(logged.lines)  # never the arguments

    upgrade(store)  # 0006: the step's row fits now
    number = writer.add(step)
    assert writer.wait_written(number)
    assert stored(store)[-1].task_id == step["task_id"]
    store.dispose()


@pytest.mark.postgres
@ON_POSTGRES
def test_rows_postgres_refuses_are_dropped_and_logged_the_others_land(
    database_url: str, logged: Lines, writers: list[JournalWriter],
) -> None:
    store = Store(database_url)
    upgrade(store)
    writer = make_writer(store, writers)
    bad = [
        row("x" * 256),  # longer than any task id column
        row(attempt="not-a-number"),  # the server refuses it: invalid_text_representation
        row(name=None),  # not_null_violation: its DETAIL lists the row, arguments too
        row(args=[object()]),  # psycopg cannot encode it as JSON
    ]
    good = [row() for _ in range(20)]
    mixed = good[:5] + bad[:2] + good[5:12] + bad[2:] + good[12:]
    numbers = {id(r): writer.add(r) for r in mixed}

    assert writer.flush() == 20
    assert writer.rejected_rows == 4
    assert [r.task_id for r in stored(store)] == [r["task_id"] for r in good]  # in order
    assert not any(writer.wait_written(numbers[id(r)]) for r in bad)
    assert all(writer.wait_written(numbers[id(r)]) for r in good)
    refused = logged.about("journal row refused")
    assert [f["task_id"] for f in refused] == [r["task_id"] for r in bad]
    assert "not-null" in refused[2]["error"] or "not null" in refused[2]["error"]
    assert SECRET not in repr(logged.lines)
    assert writer.flush() == 0  # nothing left pending: no bad row is retried
    store.dispose()


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own, to stop and start (the session's is shared)."""
    server = PostgresServer()
    server.start()
    yield server
    server.destroy()


@pytest.mark.postgres
def test_rows_wait_while_postgres_is_stopped_and_land_once_when_it_is_back(
    private_postgres: PostgresServer, logged: Lines, writers: list[JournalWriter],
) -> None:
    store = Store(private_postgres.url)
    upgrade(store)
    writer = make_writer(store, writers)
    assert writer.wait_written(writer.add(row()))  # the pool holds a live connection

    private_postgres.stop()
    good = [row() for _ in range(5)]
    bad = row("x" * 256)
    numbers = [writer.add(r) for r in (good[0], good[1], bad, *good[2:])]
    assert writer.flush() == 0
    assert not writer.wait_written(numbers[0])
    # the server is away, the rows are not at fault: none is dropped
    assert writer.rejected_rows == 0
    assert logged.about("journal write failed; rows kept")[-1]["rows"] == 6

    private_postgres.start()
    assert writer.flush() == 5
    assert writer.rejected_rows == 1
    assert [writer.wait_written(n) for n in numbers] == [True, True, False, True, True, True]
    assert len(stored(store)) == 6  # each row once
    store.dispose()


@pytest.mark.postgres
@ON_POSTGRES
def test_a_kept_connection_the_server_ended_is_replaced_and_the_row_lands_at_once(
    database_url: str, logged: Lines, writers: list[JournalWriter],
) -> None:
    """The writer keeps one connection between writes. PostgreSQL ends it (an admin's
    pg_terminate_backend, a restart, an idle timeout): the next write must not fail for
    it (a durable task's row would be taken back and the task run again)."""
    store = Store(database_url)
    upgrade(store)
    writer = make_writer(store, writers)
    assert writer.wait_written(writer.add(row()))
    assert writer._conn is not None
    backend = writer._conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    writer._conn.rollback()
    with store.engine.begin() as admin:
        assert admin.execute(text("SELECT pg_terminate_backend(:pid)"),
                             {"pid": backend}).scalar()
    assert writer.wait_written(writer.add(row()))  # at once: no failed write, no retry
    assert not logged.about("journal write failed")
    assert writer._conn.exec_driver_sql("SELECT pg_backend_pid()").scalar() != backend
    writer._conn.rollback()


def test_sqlite_writes_the_good_rows_of_a_refused_batch(
    tmp_path: Path, logged: Lines, writers: list[JournalWriter],
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(store)
    writer = make_writer(store, writers)
    bad = [row(name=None),  # NOT NULL
           row(finished_at="yesterday"),  # SQLAlchemy's DateTime takes datetimes only
           row(pid=object())]  # sqlite3 cannot bind it
    good = [row() for _ in range(9)]
    for r in good[:3] + bad[:1] + good[3:6] + bad[1:] + good[6:]:
        writer.add(r)
    assert writer.flush() == 9
    assert writer.rejected_rows == 3
    assert [r.task_id for r in stored(store)] == [r["task_id"] for r in good]
    assert [f["task_id"] for f in logged.about("journal row refused")] == \
        [r["task_id"] for r in bad]
    store.dispose()


def test_sqlite_unmigrated_or_locked_keeps_the_rows_pending(
    tmp_path: Path, logged: Lines, writers: list[JournalWriter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_engine, "SQLITE_BUSY_TIMEOUT_MS", 200)  # "locked" sooner
    path = tmp_path / "store.db"
    store = Store(f"sqlite:///{path}")
    writer = make_writer(store, writers)
    good = [row() for _ in range(4)]
    bad = row(name=None)
    for r in (good[0], bad, *good[1:]):
        writer.add(r)
    assert writer.flush() == 0  # "no such table": the rows wait for the migration
    upgrade(store)

    holder = sqlite3.connect(path)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing: "database is locked"
    assert writer.flush() == 0
    assert writer.rejected_rows == 0
    assert "locked" in logged.about("journal write failed; rows kept")[-1]["error"]
    holder.rollback()
    holder.close()

    assert writer.flush() == 4
    assert writer.rejected_rows == 1
    assert [r.task_id for r in stored(store)] == [r["task_id"] for r in good]
    store.dispose()


def test_discard_takes_back_a_pending_row_only(
    tmp_path: Path, logged: Lines, writers: list[JournalWriter],
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(store)
    writer = make_writer(store, writers)
    taken = writer.add(row("taken-back"))
    assert writer.discard(taken)
    assert not writer.discard(taken)
    assert not writer.wait_written(taken)
    written = writer.add(row("written"))
    refused = writer.add(row("refused", name=None))
    assert writer.flush() == 1
    assert writer.wait_written(written)
    assert not writer.discard(written)  # in the store already
    assert not writer.discard(refused)  # dropped by the database already
    assert not writer.discard(written + 100)  # never added
    assert [r.task_id for r in stored(store)] == ["written"]
    store.dispose()


@pytest.mark.postgres
@ON_POSTGRES
def test_discard_waits_for_the_write_holding_its_row(
    database_url: str, writers: list[JournalWriter],
) -> None:
    store = Store(database_url)
    upgrade(store)
    writer = make_writer(store, writers)
    number = writer.add(row("in-flight"))
    answers: dict[str, Any] = {}
    with store.engine.connect() as holder:
        # the flush's INSERT waits on this lock: the row is on its way to the store
        holder.execute(text("LOCK TABLE journal IN ACCESS EXCLUSIVE MODE"))
        flushing = threading.Thread(target=lambda: answers.update(flushed=writer.flush()))
        flushing.start()
        wait_for(lambda: holder.execute(text(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'journal'::regclass"
        )).scalar(), timeout=30, what="the INSERT to wait for the lock")
        discarding = threading.Thread(
            target=lambda: answers.update(discarded=writer.discard(number)))
        discarding.start()
        time.sleep(0.3)
        assert "discarded" not in answers  # it waits for the write in progress
        holder.rollback()
    flushing.join(30)
    discarding.join(30)
    # taking it back now would requeue a task whose row is written: recorded twice
    assert answers == {"flushed": 1, "discarded": False}
    assert [r.task_id for r in stored(store)] == ["in-flight"]
    store.dispose()


@pytest.mark.postgres
@ON_POSTGRES
def test_a_dead_letter_of_a_step_with_nul_bytes_is_stored(database_url: str) -> None:
    store = Store(database_url)
    upgrade(store)
    task_id = step_id()
    ctx = TaskContext(
        task=None, task_id=task_id, name="tests.step", queue="default",
        args=("a\x00b",), kwargs={"k": "v\x00"}, attempt=3, options={}, hostname=None,
        exc=RuntimeError("bad\x00byte"), traceback="Traceback\x00...", severity="high",
        exhausted_reason="retries_exhausted")
    letters = DeadLetterStore(store)
    letter = letters.get(letters.add(ctx))
    assert letter.task_id == task_id
    assert (letter.exc_message, letter.traceback) == ("badbyte", "Traceback...")
    # the arguments as given, for a replay: the json column keeps a NUL as \u0000
    assert (letter.args, letter.kwargs) == (["a\x00b"], {"k": "v\x00"})
    store.dispose()


def test_a_task_ends_once_in_the_journal(database_url: str, writers: list[JournalWriter],
                                         logged: Lines) -> None:
    """Two copies of one task that both end it (a publish the broker took but never
    confirmed, then requeued): one end row per task id (migration 0007), the second is
    dropped as a second end, not as a bad row; retries and deferrals are not ends."""
    store = Store(database_url)
    upgrade(store)
    writer = make_writer(store, writers)
    twice = uuid.uuid4().hex
    for values in (row(twice, state="retry"), row(twice, attempt=2), row(),
                   row(twice, attempt=2, state="deferred"), row(twice, attempt=2)):
        writer.add(values)
    writer.flush()
    assert [(r.task_id == twice, r.state) for r in stored(store)] == [
        (True, "retry"), (True, "success"), (False, "success"), (True, "deferred")]
    assert (writer.second_ends, writer.rejected_rows) == (1, 0)
    assert [f["task_id"] for f in logged.about("a second end of the task")] == [twice]
    # a later flush (the second copy finishing after the first was written) alike
    writer.add(row(twice, state="failure", attempt=3))
    writer.flush()
    assert writer.second_ends == 2
    assert [r.state for r in stored(store) if r.task_id == twice] == [
        "retry", "success", "deferred"]
    store.dispose()
