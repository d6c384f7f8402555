"""Tables of the system of record. Migrations in ``migrations/versions`` create them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: every task id column: a workflow step with a timeout runs under "<32 hex>.<step name>",
#: up to 161 characters (migration 0006)
TASK_ID_LENGTH = 255


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


#: one end (a ``success`` or ``failure`` row) per task id in the journal: two copies of a
#: task (a publish the broker took but never confirmed, a worker killed between a retry's
#: publish and its acknowledgement) may both run; the database records one end
JOURNAL_ONE_END = "uq_journal_one_end"
ENDS = "state IN ('success', 'failure')"


class JournalEntry(Base):
    """One attempt of one task: what ran, where, with what, and how it ended."""

    __tablename__ = "journal"
    __table_args__ = (
        Index(JOURNAL_ONE_END, "task_id", unique=True, sqlite_where=text(ENDS),
              postgresql_where=text(ENDS)),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(TASK_ID_LENGTH), index=True)
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
    #: unique: a task ends once, even when two copies of it both fail for good
    task_id: Mapped[str] = mapped_column(String(TASK_ID_LENGTH), index=True, unique=True)
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
    replay_task_id: Mapped[str | None] = mapped_column(String(TASK_ID_LENGTH))


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


class WorkflowDefinition(Base):
    """One version of a workflow definition, as registered (JSON of Workflow.to_dict)."""

    __tablename__ = "workflow_definitions"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    definition: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkflowRun(Base):
    """One run of a workflow; ``remaining`` counts its steps not yet in a final state."""

    __tablename__ = "workflow_runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(255), index=True)
    version: Mapped[int]
    input: Mapped[Any] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    remaining: Mapped[int]
    error: Mapped[str | None] = mapped_column(Text)
    failed_step: Mapped[str | None] = mapped_column(String(128))
    resumes: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(index=True)
    deadline: Mapped[datetime | None] = mapped_column(index=True)


class WorkflowStepRun(Base):
    """The state of one step of one run. ``waiting`` counts dependencies not yet done;
    ``token`` names the one message allowed to run it (the Celery task id derives from
    it); ``attempt`` counts resumes, ``tries`` executions (retries and redeliveries)."""

    __tablename__ = "workflow_steps"

    run_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    waiting: Mapped[int]
    attempt: Mapped[int] = mapped_column(default=1)
    tries: Mapped[int] = mapped_column(default=0)
    token: Mapped[str | None] = mapped_column(String(36))
    #: the Celery id it last ran under; indexed: a dead letter's replay finds its run
    task_id: Mapped[str | None] = mapped_column(String(TASK_ID_LENGTH), index=True)
    dispatched: Mapped[bool] = mapped_column(default=False)
    skip_reason: Mapped[str | None] = mapped_column(String(32))
    queued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text)


class ScalingDecision(Base):
    """One change the autoscaler made to a worker group, with what it saw and why."""

    __tablename__ = "scaling_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    decided_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    hostname: Mapped[str] = mapped_column(String(255))
    group: Mapped[str] = mapped_column(String(128), index=True)
    previous: Mapped[int]
    desired: Mapped[int]
    backlog: Mapped[int]
    reason: Mapped[str] = mapped_column(Text)
    cpu_percent: Mapped[float] = mapped_column(Float)
    memory_percent: Mapped[float] = mapped_column(Float)
    #: every group's backlog per queue and live workers at the moment of the decision
    observations: Mapped[dict[str, Any]]


class Dataset(Base):
    """A dataset for map-reduce jobs; its items are rows of ``dataset_items``.

    ``state`` is ``ready``, or ``building`` while a job writes its output into it."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    source: Mapped[str] = mapped_column(String(16))  # csv, jsonl, table, query, job
    origin: Mapped[str | None] = mapped_column(Text)  # the file, table, query or job
    state: Mapped[str] = mapped_column(String(16), default="ready")
    row_count: Mapped[int] = mapped_column(default=0)
    columns: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetItem(Base):
    """One item of a dataset; ``item_index`` is dense, 0..row_count-1, the key partitions
    are cut on."""

    __tablename__ = "dataset_items"

    dataset_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True)
    item_index: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[Any] = mapped_column(JSON)


class MapReduceJob(Base):
    """A map-reduce job (a workflow run with the same id): what it runs on, and once its
    reduce step is done, the final result."""

    # the table keeps its first name: stores in use have it, and renaming a table would
    # cost a migration for no change in what it holds
    __tablename__ = "processing_results"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    dataset_id: Mapped[int] = mapped_column(Integer, index=True)
    dataset: Mapped[str] = mapped_column(String(255))
    function: Mapped[str] = mapped_column(String(128))
    params: Mapped[Any] = mapped_column(JSON)
    partition_size: Mapped[int]
    partitions: Mapped[int]
    items: Mapped[int]
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[datetime | None]
