"""Retention: what the hourly cleanup deletes of what grows with use (settings
``[retention]``), on SQLite and PostgreSQL.

- dead letters: never replayed, ``dead_letters_days`` (90) after the failure, since an
  unreplayed letter is the evidence of a failure nobody acted on; replayed ones
  ``replayed_dead_letters_days`` (30) after their last replay;
- notifications ``notifications_days`` (30), scaling decisions
  ``scaling_decisions_days`` (14);
- map-reduce jobs (``processing_results``) ``mapreduce_jobs_days`` (30) after their run
  ended, with the run and its steps (the partials); a job whose run never started, that
  long after it was created;
- other workflow runs ``workflow_runs_days`` (30) after they ended, with their steps;
  running ones never;
- then the workflow definitions no remaining run uses, created ``workflow_runs_days``
  ago or more, that a map-reduce job generated or a newer version superseded (the
  latest version of a workflow stays: it is what ``start`` runs).

Rows go in short transactions of ``batch_size`` (a run with all its steps, however
many, in one: a run is never left half deleted), so a large backlog never holds a lock
for long; each ``DELETE`` re-checks its rule, so a run resumed meanwhile is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Select,
    and_,
    delete,
    exists,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy.orm import aliased

from taskworks import keys
from taskworks.mapreduce.jobs import WORKFLOW_PREFIX as MAPREDUCE_WORKFLOW_PREFIX
from taskworks.settings import RetentionSettings
from taskworks.store.engine import Store
from taskworks.store.tables import (
    DeadLetter,
    MapReduceJob,
    Notification,
    ScalingDecision,
    WorkflowDefinition,
    WorkflowRun,
    WorkflowStepRun,
)
from taskworks.workflows.model import RunState

#: run states nothing happens after
FINAL_STATES = tuple(state.value for state in RunState if state.terminal)

Runs = WorkflowRun
Steps = WorkflowStepRun
Jobs = MapReduceJob
Definitions = WorkflowDefinition


def _rowcount(result: Any) -> int:
    return max(int(cast(CursorResult[Any], result).rowcount or 0), 0)


def delete_expired(store: Store, settings: RetentionSettings,
                   now: datetime | None = None) -> dict[str, int]:
    """Apply every rule above; returns the rows deleted per rule."""
    now = now or datetime.now(UTC)

    def ago(days: float) -> datetime:
        return now - timedelta(days=days)

    batch = settings.batch_size
    runs_cutoff = ago(settings.workflow_runs_days)
    return {
        "dead_letters": _delete_batched(store, DeadLetter, lambda t: and_(
            t.replayed_at.is_(None), t.failed_at < ago(settings.dead_letters_days)), batch),
        "replayed_dead_letters": _delete_batched(store, DeadLetter, lambda t: and_(
            t.replayed_at.is_not(None),
            t.replayed_at < ago(settings.replayed_dead_letters_days)), batch),
        "notifications": _delete_batched(
            store, Notification, lambda t: t.created_at < ago(settings.notifications_days),
            batch),
        "scaling_decisions": _delete_batched(
            store, ScalingDecision,
            lambda t: t.decided_at < ago(settings.scaling_decisions_days), batch),
        # jobs before runs: a job's run is deleted with its row, by the jobs' own rule
        "mapreduce_jobs": delete_jobs(store, ago(settings.mapreduce_jobs_days), batch),
        "workflow_runs": delete_runs(store, runs_cutoff, batch),
        # last: the runs just deleted no longer keep their definitions
        "workflow_definitions": delete_definitions(store, runs_cutoff, batch),
    }


def _delete_batched(store: Store, model: type[DeadLetter | Notification | ScalingDecision],
                    rule: Callable[[Any], ColumnElement[bool]], batch: int) -> int:
    """``DELETE ... WHERE id IN (SELECT id ... WHERE rule LIMIT batch)``, one transaction
    each, until a batch comes back short. The SELECT is over an alias of the table:
    SQLAlchemy would otherwise correlate it with the DELETE's own table."""
    t = aliased(model)
    chosen = select(t.id).where(rule(t)).limit(batch)
    total = 0
    while True:
        with store.engine.begin() as conn:
            deleted = _rowcount(conn.execute(delete(model).where(model.id.in_(chosen))))
        total += deleted
        if deleted < batch:
            return total


def _ended_before(cutoff: datetime) -> ColumnElement[bool]:
    return and_(Runs.state.in_(FINAL_STATES), Runs.finished_at < cutoff)


def delete_runs(store: Store, cutoff: datetime, batch: int) -> int:
    """Workflow runs (not map-reduce jobs: ``delete_jobs``) that ended before ``cutoff``,
    with their steps."""
    candidates = select(Runs.id).where(
        _ended_before(cutoff), ~exists().where(Jobs.id == Runs.id))
    return _delete_runs(store, candidates, cutoff, batch, jobs=False)


def delete_jobs(store: Store, cutoff: datetime, batch: int) -> int:
    """Map-reduce jobs whose run ended before ``cutoff`` (or, never started, that were
    created before it): the job's row, its run and the run's steps."""
    candidates = select(Jobs.id).outerjoin(Runs, Runs.id == Jobs.id).where(or_(
        and_(Runs.id.is_(None), Jobs.created_at < cutoff), _ended_before(cutoff)))
    return _delete_runs(store, candidates, cutoff, batch, jobs=True)


def _delete_runs(store: Store, candidates: Select[str], cutoff: datetime, batch: int,
                 *, jobs: bool) -> int:
    total = 0
    while True:
        with store.engine.connect() as conn:
            ids = list(conn.execute(candidates.limit(batch)).scalars())
            steps: dict[str, int] = {
                row[0]: row[1] for row in conn.execute(
                    select(Steps.run_id, func.count()).where(Steps.run_id.in_(ids))
                    .group_by(Steps.run_id))} if ids else {}
        before = total
        for group in _groups(ids, steps, batch):
            with store.engine.begin() as conn:
                # the rule again: a run resumed since the SELECT stays, with its steps
                gone = list(conn.execute(delete(Runs).where(
                    Runs.id.in_(group), _ended_before(cutoff)).returning(Runs.id)).scalars())
                if gone:
                    conn.execute(delete(Steps).where(Steps.run_id.in_(gone)))
                if jobs:
                    total += _rowcount(conn.execute(delete(Jobs).where(
                        Jobs.id.in_(group), ~exists().where(Runs.id == Jobs.id))))
                else:
                    total += len(gone)
        if len(ids) < batch or total == before:
            return total


def _groups(ids: Sequence[str], steps: dict[str, int], batch: int) -> Iterator[list[str]]:
    """Runs in groups of at most ``batch`` rows (a run and its steps), one run at least."""
    group: list[str] = []
    rows = 0
    for run_id in ids:
        size = 1 + steps.get(run_id, 0)
        if group and rows + size > batch:
            yield group
            group, rows = [], 0
        group.append(run_id)
        rows += size
    if group:
        yield group


def delete_definitions(store: Store, cutoff: datetime, batch: int) -> int:
    """Definitions created before ``cutoff`` that no run uses, generated for a map-reduce
    job or superseded by a newer version of their workflow."""
    d, newer = aliased(Definitions), aliased(Definitions)
    condition = and_(
        d.created_at < cutoff,
        ~exists().where(Runs.workflow == d.name, Runs.version == d.version),
        or_(d.name.startswith(MAPREDUCE_WORKFLOW_PREFIX, autoescape=True),
            exists().where(newer.name == d.name, newer.version > d.version)),
    )
    chosen = select(d.name, d.version).where(condition).limit(batch)
    total = 0
    while True:
        with store.engine.begin() as conn:
            deleted = _rowcount(conn.execute(delete(Definitions).where(
                tuple_(Definitions.name, Definitions.version).in_(chosen))))
        total += deleted
        if deleted < batch:
            return total


def trim_undeliverable(client: redis.Redis, keep: int) -> int:
    """Keep the newest ``keep`` entries of the undeliverable list; returns how many went
    (the consumer trims at every push too: this applies a changed setting)."""
    pipe = client.pipeline(transaction=True)
    pipe.llen(keys.UNDELIVERABLE)
    pipe.ltrim(keys.UNDELIVERABLE, -keep, -1)
    pipe.llen(keys.UNDELIVERABLE)
    before, _, after = pipe.execute()
    return max(int(before) - int(after), 0)
