"""Migration 0006: every task id column holds a workflow step's id (``<32 hex>.<step>``,
up to 161 characters), on SQLite and PostgreSQL, and the columns match the models."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import String, insert, inspect, select

from taskworks.store.engine import Store
from taskworks.store.migrate import upgrade
from taskworks.store.tables import Base, DeadLetter, JournalEntry, WorkflowStepRun

TASK_ID_COLUMNS = {("journal", "task_id"), ("dead_letters", "task_id"),
                   ("dead_letters", "replay_task_id"), ("workflow_steps", "task_id")}


def _rows(task_id: str) -> list[tuple[type[Base], dict[str, object]]]:
    now = datetime.now(UTC)
    return [
        (JournalEntry, {"task_id": task_id, "name": "tests.step", "state": "success",
                        "attempt": 1, "args": [], "kwargs": {}, "finished_at": now}),
        (DeadLetter, {"task_id": task_id, "name": "tests.step", "args": [], "kwargs": {},
                      "attempts": 3, "reason": "failed", "failed_at": now,
                      "replay_task_id": task_id}),
        (WorkflowStepRun, {"run_id": str(uuid.uuid4()), "name": "step", "state": "queued",
                           "waiting": 0, "task_id": task_id}),
    ]


def test_task_id_columns_hold_a_step_id_and_match_the_models(database_url: str) -> None:
    store = Store(database_url)
    upgrade(store, "0005")
    old_id = uuid.uuid4().hex  # a plain Celery id, written before the migration
    with store.engine.begin() as conn:
        for model, values in _rows(old_id):
            conn.execute(insert(model), [values])

    upgrade(store)
    step_id = f"{uuid.uuid4().hex}.{'s' * 128}"  # the longest step id: 161 characters
    assert len(step_id) == 161
    with store.engine.begin() as conn:
        for model, values in _rows(step_id):
            conn.execute(insert(model), [{**values, "name": "step2"}
                                         if model is WorkflowStepRun else values])
    with store.engine.connect() as conn:
        for model in (JournalEntry, DeadLetter, WorkflowStepRun):
            ids = set(conn.scalars(select(model.__table__.c.task_id)))
            assert ids == {old_id, step_id}, model.__tablename__  # the old rows survive

    schema = inspect(store.engine)
    for name, table in Base.metadata.tables.items():
        reflected = {c["name"]: c["type"] for c in schema.get_columns(name)}
        for column in table.columns:
            if isinstance(column.type, String) and column.type.length:
                assert getattr(reflected[column.name], "length", None) == column.type.length, \
                    f"{name}.{column.name}"
                if (name, column.name) in TASK_ID_COLUMNS:
                    assert column.type.length == 255
    # SQLite's batch migration copies the tables: their indexes must come along
    for name in ("journal", "dead_letters"):
        indexed = {col for index in schema.get_indexes(name) for col in index["column_names"]}
        assert "task_id" in indexed, name
    store.dispose()
