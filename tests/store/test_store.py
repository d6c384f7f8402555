"""The store against SQLite and a real PostgreSQL: migrations, connection settings, fork."""

from __future__ import annotations

import json
import os

from sqlalchemy import inspect, text

from taskworks.store.engine import SQLITE_BUSY_TIMEOUT_MS, Store
from taskworks.store.migrate import current_revision, head_revision, upgrade
from taskworks.store.tables import Base


def test_upgrade_creates_tables_and_is_idempotent(database_url: str) -> None:
    store = Store(database_url)
    assert current_revision(store) is None
    upgrade(store)
    upgrade(store)  # a second run changes nothing and does not fail
    assert current_revision(store) == head_revision()
    tables = set(inspect(store.engine).get_table_names())
    # the migrations create exactly the tables the models describe
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    for name, table in Base.metadata.tables.items():
        migrated = {c["name"] for c in inspect(store.engine).get_columns(name)}
        assert migrated == set(table.columns.keys()), name
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    store.dispose()


def test_connection_settings(database_url: str) -> None:
    store = Store(database_url)
    with store.engine.connect() as conn:
        if store.engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS
        else:
            # postgresql:// means psycopg 3, not SQLAlchemy's default psycopg2
            assert store.engine.dialect.driver == "psycopg"
            assert conn.execute(text("SELECT 1")).scalar() == 1
    store.dispose()


def test_forked_child_gets_its_own_engine(database_url: str) -> None:
    store = Store(database_url)
    parent_engine = store.engine
    with parent_engine.connect() as conn:  # a pooled connection the child inherits
        conn.execute(text("SELECT 1"))
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 1
        try:
            os.close(read_fd)
            with store.engine.connect() as conn:
                value = conn.execute(text("SELECT 41 + 1")).scalar()
            report = {"new_engine": store.engine is not parent_engine,
                      "pid": store._pid, "value": value}
            os.write(write_fd, json.dumps(report).encode())
            store.dispose()
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        child = json.loads(pipe.read() or b"{}")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child == {"new_engine": True, "pid": pid, "value": 42}
    # the parent's engine and its pooled connection are untouched by the child
    assert store.engine is parent_engine
    assert store._pid == os.getpid()
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT 7")).scalar() == 7
    store.dispose()
