"""``schema_check.not_migrated``: which store errors mean "run `taskworks db upgrade`",
on a real SQLite file and a real PostgreSQL database (the ``database_url`` fixture)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import DBAPIError

from taskworks.errors import StoreNotMigrated
from taskworks.runtime import journal
from taskworks.store.engine import Store
from taskworks.store.migrate import current_revision, head_revision, upgrade
from taskworks.store.schema_check import not_migrated
from taskworks.store.tables import WorkflowRun


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    yield store
    store.dispose()


def failure(call: Callable[[], Any]) -> DBAPIError:
    with pytest.raises(DBAPIError) as caught:
        call()
    return caught.value


def list_runs(store: Store) -> Callable[[], Any]:
    def call() -> Any:
        with store.session() as session:
            return session.scalars(select(WorkflowRun)).all()
    return call


def test_an_empty_database_is_not_migrated_and_stays_empty(store: Store) -> None:
    exc = failure(lambda: journal.query(store, journal.JournalQuery()))
    error = not_migrated(store, exc)
    assert isinstance(error, StoreNotMigrated)
    assert (error.current, error.head) == (None, head_revision())
    assert str(error) == (f"database_url: the store at {store.url} has no schema yet (this "
                          f"release needs revision {head_revision()}); run `taskworks db "
                          "upgrade`")
    assert inspect(store.engine).get_table_names() == []  # reading the revision created nothing


def test_an_older_revision_is_not_migrated(store: Store) -> None:
    upgrade(store, "0002")  # the journal, not yet the workflow tables
    error = not_migrated(store, failure(list_runs(store)))
    assert isinstance(error, StoreNotMigrated)
    assert error.current == "0002"
    assert f"is at schema revision 0002 (this release needs revision {head_revision()})" \
        in str(error)
    assert current_revision(store) == "0002"


def test_a_table_missing_at_the_newest_revision_keeps_its_own_error(store: Store) -> None:
    upgrade(store)
    with store.engine.begin() as conn:
        conn.execute(text("DROP TABLE workflow_steps"))
        conn.execute(text("DROP TABLE workflow_runs"))
    assert not_migrated(store, failure(list_runs(store))) is None  # upgrading cannot help


def test_a_revision_from_a_newer_release_keeps_its_own_error(store: Store) -> None:
    upgrade(store, "0002")
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    assert not_migrated(store, failure(list_runs(store))) is None


def test_other_database_errors_are_not_about_migrations(store: Store) -> None:
    def bad_sql() -> None:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT FROM WHERE"))

    assert not_migrated(store, failure(bad_sql)) is None
