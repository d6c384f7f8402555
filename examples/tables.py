"""The example's own tables, in a MetaData of their own.

They live in the taskworks store's database (``tw.store.engine``) but are not part of
taskworks' schema: ``create_tables`` makes them with ``create_all``, no migration. The
dataset table is ``example_datasets`` so that it can never meet a table of taskworks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
)

if TYPE_CHECKING:
    from taskworks.app import Taskworks

metadata = MetaData()

datasets = Table(
    "example_datasets", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("data", JSON, nullable=False),  # a JSON array of items
)
processing_results = Table(
    "example_processing_results", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # one result per task: a redelivered task finds its result instead of adding another
    Column("task_id", String(64), nullable=False, unique=True),
    Column("dataset_id", Integer, nullable=False, index=True),
    Column("processed_count", Integer, nullable=False),
    Column("result_data", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
email_logs = Table(
    "email_logs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String(64), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("subject", Text, nullable=False),
    Column("status", String(16), nullable=False),  # sent or failed
    Column("error", Text),
    Column("sent_at", DateTime(timezone=True), nullable=False),
)
users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("updated_at", DateTime(timezone=True)),
)


def create_tables(tw: Taskworks) -> None:
    """Create the example's tables in the taskworks store (idempotent)."""
    metadata.create_all(tw.store.engine)


def clear_tables(tw: Taskworks) -> None:
    with tw.store.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(delete(table))



def seed_users(tw: Taskworks, count: int, start: int = 1) -> list[int]:
    """Insert ``count`` active users (ids from ``start``); returns their ids."""
    ids = list(range(start, start + count))
    with tw.store.engine.begin() as conn:
        conn.execute(insert(users), [{"id": i, "email": f"user{i}@example.org",
                                      "is_active": True} for i in ids])
    return ids


def seed_dataset(tw: Taskworks, dataset_id: int, name: str, items: list[Any]) -> int:
    with tw.store.engine.begin() as conn:
        conn.execute(insert(datasets).values(id=dataset_id, name=name, data=items))
    return dataset_id

