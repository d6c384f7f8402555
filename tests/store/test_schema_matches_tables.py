"""The migrations build the schema tables.py declares: no table, column or index of one is
missing from the other (an index declared in a model but never migrated only shows as a
slow query years later)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from taskworks.store.engine import Store
from taskworks.store.migrate import upgrade
from taskworks.store.tables import Base


def _structural(diff: Any) -> bool:
    """Tables, columns and indexes; type and default renderings differ between what a
    dialect reports and what the models say without being a missing object."""
    kind: str = diff[0] if isinstance(diff, tuple) else diff[0][0]
    return kind.startswith(("add_", "remove_"))


def test_a_migrated_database_has_every_table_column_and_index_of_the_models(
        database_url: str) -> None:
    store = Store(database_url)
    upgrade(store)
    with store.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    missing = [d for d in diffs if _structural(d)]
    assert missing == [], missing
