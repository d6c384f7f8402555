"""Runtime tests share the session's SQLite store: start each test with empty tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from taskworks.store.tables import DeadLetter, JournalEntry, Notification
from tests.support.wait import wait_for


@pytest.fixture
def store(tw: Any) -> Any:
    with tw.store.session() as session:
        for table in (JournalEntry, DeadLetter, Notification):
            session.execute(delete(table))
    return tw.store


@pytest.fixture
def journal_rows(store: Any) -> Callable[..., list[JournalEntry]]:
    """Wait until at least ``count`` journal rows exist (for ``name``), then return them."""

    def rows(count: int, name: str | None = None, timeout: float = 30) -> list[JournalEntry]:
        def current() -> list[JournalEntry]:
            stmt = select(JournalEntry).order_by(JournalEntry.id)
            if name:
                stmt = stmt.where(JournalEntry.name == name)
            with store.session() as session:
                found = list(session.scalars(stmt))
            return found if len(found) >= count else []

        return wait_for(current, timeout=timeout, interval=0.1, what=f"{count} journal rows")

    return rows


def count(store: Any, table: Any) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)
