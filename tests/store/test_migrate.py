"""Concurrent ``taskworks db upgrade`` runs on PostgreSQL (several API pods' init
containers at once) take turns on an advisory lock instead of racing."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import create_engine, text

from taskworks.store.engine import Store, normalise_url
from taskworks.store.migrate import MIGRATION_LOCK, current_revision, head_revision, upgrade
from tests.support.wait import wait_for


@pytest.fixture
def postgres_database(database_url: str) -> str:
    return database_url


# the lock is PostgreSQL's: a fresh database on the real server only
pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def test_an_upgrade_waits_for_the_one_in_progress(postgres_database: str) -> None:
    store = Store(postgres_database)
    other = create_engine(normalise_url(postgres_database))
    failures: list[BaseException] = []

    def run_upgrade() -> None:
        try:
            upgrade(store)
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    with other.connect() as holder:
        # another upgrade "in progress": it holds the lock in its transaction
        holder.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        thread = threading.Thread(target=run_upgrade)
        thread.start()
        wait_for(lambda: holder.execute(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )).scalar(), timeout=60, what="the upgrade to wait for the lock")
        assert thread.is_alive()
        assert current_revision(store) is None  # it has done nothing yet
        holder.rollback()  # the other upgrade ends
        thread.join(120)
    assert not failures, failures
    assert current_revision(store) == head_revision()
    other.dispose()
    store.dispose()


def test_simultaneous_upgrades_all_succeed(postgres_database: str) -> None:
    stores = [Store(postgres_database) for _ in range(3)]
    failures: list[BaseException] = []

    def run_upgrade(store: Store) -> None:
        try:
            upgrade(store)
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=run_upgrade, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    assert current_revision(stores[0]) == head_revision()
    for store in stores:
        store.dispose()
