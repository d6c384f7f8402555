"""The journal's retention: rows past ``retention_days``, then the oldest past ``max_rows``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from taskworks.settings import JournalSettings
from taskworks.store.engine import Store
from taskworks.store.tables import JournalEntry

__all__ = ["enforce_retention"]


def enforce_retention(store: Store, settings: JournalSettings,
                      now: datetime | None = None) -> dict[str, int]:
    """Delete entries older than retention_days, then the oldest beyond max_rows."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.retention_days)
    with store.session() as session:
        by_age = session.execute(delete(JournalEntry).where(JournalEntry.finished_at < cutoff))
        keep_from = session.scalar(
            select(JournalEntry.id).order_by(JournalEntry.id.desc())
            .offset(settings.max_rows - 1).limit(1)
        )
        by_count = session.execute(delete(JournalEntry).where(JournalEntry.id < keep_from)) \
            if keep_from is not None else None
    return {"journal_by_age": getattr(by_age, "rowcount", 0) or 0,
            "journal_by_count": getattr(by_count, "rowcount", 0) or 0}
