"""Tables of the system of record. Migrations in ``migrations/versions`` create them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class HealthCheck(Base):
    """One run of the health-check task: what answered and what did not."""

    __tablename__ = "health_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    checked_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    healthy: Mapped[bool]
    broker_ok: Mapped[bool]
    database_ok: Mapped[bool]
    workers: Mapped[int]
    details: Mapped[dict[str, Any]]


class Report(Base):
    """A periodic report (the daily report), its body as JSON."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    body: Mapped[dict[str, Any]]


class JournalEntry(Base):
    """One attempt of one task: what ran, where, with what, and how it ended."""

    __tablename__ = "journal"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    queue: Mapped[str | None] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int]
    args: Mapped[Any] = mapped_column(JSON)
    kwargs: Mapped[Any] = mapped_column(JSON)
    result: Mapped[str | None] = mapped_column(Text)
    exc_type: Mapped[str | None] = mapped_column(String(255))
    exc_message: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    severity: Mapped[str | None] = mapped_column(String(16), index=True)
    hostname: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime] = mapped_column(index=True)
    duration_ms: Mapped[float | None] = mapped_column(Float)


class DeadLetter(Base):
    """A task that exhausted its retries or failed for good, with all it needs to replay."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    queue: Mapped[str | None] = mapped_column(String(128))
    args: Mapped[Any] = mapped_column(JSON)
    kwargs: Mapped[Any] = mapped_column(JSON)
    exc_type: Mapped[str | None] = mapped_column(String(255), index=True)
    exc_message: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    severity: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int]
    reason: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    replay_count: Mapped[int] = mapped_column(default=0)
    replayed_at: Mapped[datetime | None]
    replay_task_id: Mapped[str | None] = mapped_column(String(64))


class Notification(Base):
    """One notification sent (or that failed to send) about a task failure."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    channel: Mapped[str] = mapped_column(String(32))
    task_name: Mapped[str] = mapped_column(String(255), index=True)
    exc_type: Mapped[str | None] = mapped_column(String(255))
    severity: Mapped[str] = mapped_column(String(16))
    occurrences: Mapped[int] = mapped_column(default=1)
    subject: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
