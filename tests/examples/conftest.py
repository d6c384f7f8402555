"""The example's own tables, created in the session's store; they, the journal and the
dead-letter store start each test empty."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import delete

from examples import tables
from taskworks.store.tables import DeadLetter, JournalEntry
from tests.support.workers import WorkerProcess

#: every queue the example tasks use
QUEUES = ["default", "io_intensive", "cpu_intensive"]


@pytest.fixture
def clean_tables(tw: Any) -> Any:
    tables.create_tables(tw)
    tables.clear_tables(tw)
    with tw.store.session() as session:
        for table in (JournalEntry, DeadLetter):
            session.execute(delete(table))
    return tw


@pytest.fixture
def worker(clean_tables: Any, start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker(QUEUES)
