"""The built-in db_operation task on SQLite and PostgreSQL, with real workers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text

from taskworks.errors import InvalidInput, TaskworksError
from taskworks.runtime.journal import attempts
from taskworks.store.engine import make_engine
from taskworks.tasks.db_operation import NAME, check_params, check_statement, run_operation
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess


@pytest.mark.parametrize(("operation", "statement", "expected"), [
    ("drop", "DROP TABLE t", "operation"),
    ("SELECT", "", "statement"),
    ("select", "DELETE FROM t", "starting with SELECT"),
    ("update", "  -- sneaky\nUPDATE t SET a = 1", "starting with UPDATE"),
    ("select", "WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", "starting with SELECT"),
    ("delete", "DELETE FROM t; DROP TABLE t", "single statement"),
    ("insert", "INSERT INTO t VALUES (1);;", "single statement"),
])
def test_statements_other_than_the_operation_are_refused(
        operation: str, statement: str, expected: str) -> None:
    with pytest.raises(InvalidInput, match=expected):
        check_statement(operation, statement)


def test_one_statement_with_a_trailing_semicolon_is_fine() -> None:
    assert check_statement("Select", " select 1;\n") == "select 1"
    with pytest.raises(InvalidInput, match="params"):
        check_params({"a b": 1})
    with pytest.raises(InvalidInput, match="params"):
        check_params([1, 2])


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, "
                          "price NUMERIC(10, 2), added DATE)"))
    yield engine
    engine.dispose()


def test_select_insert_update_delete_with_bound_parameters(engine: Engine) -> None:
    insert = "INSERT INTO items (id, name, price, added) VALUES (:id, :name, :price, :added)"
    assert run_operation(engine, "insert", insert,
                         {"id": 1, "name": "a'; DROP TABLE items; --", "price": "9.50",
                          "added": "2026-01-02"}) == 1
    assert run_operation(engine, "insert", insert,
                         {"id": 2, "name": "b", "price": 3, "added": None}) == 1
    assert run_operation(engine, "update", "UPDATE items SET price = :p WHERE id > :id",
                         {"p": 4, "id": 1}) == 1
    rows = run_operation(engine, "select", "SELECT id, name, price FROM items ORDER BY id")
    assert isinstance(rows, list)
    json.dumps(rows)  # JSON-able as returned
    assert [(r["id"], r["name"]) for r in rows] == [(1, "a'; DROP TABLE items; --"), (2, "b")]
    assert float(rows[1]["price"]) == 4
    assert run_operation(engine, "delete", "DELETE FROM items WHERE id = :id", {"id": 1}) == 1
    assert run_operation(engine, "select", "SELECT count(*) AS n FROM items") == [{"n": 1}]


def test_the_task_runs_on_a_named_database_in_a_worker(
    tw: Any, engine: Engine, database_url: str, start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker(env={"TASKWORKS_DATABASES": json.dumps({"target": database_url})})
    inserted = tw.submit(NAME, kwargs={
        "operation": "insert", "database": "target",
        "statement": "INSERT INTO items (id, name) VALUES (:id, :name)",
        "params": {"id": 7, "name": "seven"}})
    assert inserted.get(timeout=30) == 1
    rows = tw.submit(NAME, kwargs={"operation": "select", "database": "target",
                                   "statement": "SELECT id, name FROM items"})
    assert rows.get(timeout=30) == [{"id": 7, "name": "seven"}]
    # no database named: the taskworks store itself
    count = tw.submit(NAME, ["select", "SELECT count(*) AS n FROM health_checks"])
    assert list(count.get(timeout=30)[0]) == ["n"]


def test_a_refused_operation_fails_at_once_without_retries(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker()
    for kwargs, message in (
        ({"operation": "truncate", "statement": "TRUNCATE items"},
         "operation: got 'truncate', expected one of select, insert, update, delete"),
        ({"operation": "select", "statement": "SELECT 1", "database": "nope"},
         "database: got 'nope', expected a name from the databases setting"),
    ):
        result = tw.submit(NAME, kwargs=kwargs)
        with pytest.raises(TaskworksError, match=message):
            result.get(timeout=30)
        assert [r.state for r in attempts(tw.store, result.id)] == ["failure"]  # no retry
        assert "InvalidInput" in (result.traceback or "")


@pytest.mark.postgres
def test_a_dropped_postgres_connection_is_retried_and_succeeds(
    tw: Any, postgres_url: str, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker(env={"TASKWORKS_DATABASES": json.dumps({"pg": postgres_url})})
    marker = "tw_drop_me"
    result = tw.submit(NAME, kwargs={
        "operation": "select", "database": "pg",
        "statement": f"SELECT 42 AS answer, :tag AS tag FROM pg_sleep(1.5) /* {marker} */",
        "params": {"tag": "t"}})
    # autocommit: pg_stat_activity is a snapshot per transaction
    admin = make_engine(postgres_url).execution_options(isolation_level="AUTOCOMMIT")
    find = text("SELECT pid FROM pg_stat_activity WHERE query LIKE :q "
                "AND pid <> pg_backend_pid() AND state = 'active'")
    with admin.connect() as conn:
        def running() -> int | None:
            return conn.execute(find, {"q": f"%{marker}%"}).scalar()

        pid = wait_for(running, what="the query to run on PostgreSQL")
        assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    admin.dispose()
    assert result.get(timeout=60) == [{"answer": 42, "tag": "t"}]
    # the OperationalError was retried once, with backoff
    assert [r.state for r in attempts(tw.store, result.id)] == ["retry", "success"]


def test_the_databases_setting_refuses_a_url_it_cannot_use() -> None:
    from taskworks.errors import ConfigError
    from taskworks.settings import load_settings

    assert load_settings(databases={"b": "postgresql://u@h/db"}).databases == {
        "b": "postgresql://u@h/db"}
    with pytest.raises(ConfigError, match=r"databases\['b'\]: expected a database of kind"):
        load_settings(databases={"b": "mysql://u@h/db"})
