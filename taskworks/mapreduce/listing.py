"""Recent map-reduce jobs, each with its partitions counted by state: one query for the
jobs and one for their partitions, whatever the number of jobs listed."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import and_, func, select
from sqlalchemy.orm import aliased

from taskworks.errors import InvalidInput
from taskworks.mapreduce.jobs import REDUCE_STEP, job_state, percent_done
from taskworks.store.engine import Store
from taskworks.store.tables import MapReduceJob, WorkflowRun, WorkflowStepRun
from taskworks.workflows.model import RunState, StepState

__all__ = ["JOB_STATES", "JobState", "JobSummary", "recent_jobs"]

JobState = Literal["running", "completed", "failed", "cancelled", "partial"]
JOB_STATES: tuple[JobState, ...] = ("running", "completed", "failed", "cancelled", "partial")
#: a job's state is its workflow run's (a failed run whose reduce succeeded: partial)
_RUN_STATES: dict[JobState, str] = {
    "running": RunState.RUNNING.value, "completed": RunState.SUCCEEDED.value,
    "failed": RunState.FAILED.value, "cancelled": RunState.CANCELLED.value,
    "partial": RunState.FAILED.value}
MAX_LIMIT = 500


@dataclass(frozen=True)
class JobSummary:
    id: str
    dataset: str
    function: str
    items: int
    partition_size: int
    state: str
    partitions_total: int
    partitions_done: int
    #: partitions by step state; partitions with no step row yet count as PENDING
    partition_states: dict[str, int]
    error: str | None
    created_at: datetime
    finished_at: datetime | None

    @property
    def percent(self) -> float:
        return percent_done(self.partitions_done, self.partitions_total, self.state)


def recent_jobs(store: Store, state: str | None = None, limit: int = 50) -> list[JobSummary]:
    """The newest ``limit`` jobs (1 to 500), only those in ``state`` when given."""
    if state is not None and state not in JOB_STATES:
        raise InvalidInput("state", state, f"one of {', '.join(JOB_STATES)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput("limit", limit, f"an integer from 1 to {MAX_LIMIT}")
    reduce = aliased(WorkflowStepRun)
    stmt = (select(MapReduceJob, WorkflowRun.state, WorkflowRun.error,
                   WorkflowRun.finished_at, reduce.state)
            .join(WorkflowRun, WorkflowRun.id == MapReduceJob.id)
            .outerjoin(reduce, and_(reduce.run_id == MapReduceJob.id,
                                    reduce.name == REDUCE_STEP))
            .order_by(MapReduceJob.created_at.desc()).limit(limit))
    if state is not None:
        stmt = stmt.where(WorkflowRun.state == _RUN_STATES[state])
        if state in ("failed", "partial"):  # told apart by the reduce's state
            reduced = reduce.state == StepState.SUCCEEDED.value
            stmt = stmt.where(reduced if state == "partial"
                              else (reduce.state.is_(None) | ~reduced))
    with store.session() as session:
        rows: list[Any] = list(session.execute(stmt))
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        if rows:
            steps = WorkflowStepRun
            for run_id, step_state, n in session.execute(
                    select(steps.run_id, steps.state, func.count())
                    .where(steps.run_id.in_([r[0].id for r in rows]),
                           steps.name != REDUCE_STEP)
                    .group_by(steps.run_id, steps.state)):
                counts[run_id][step_state] = int(n)
    summaries = []
    for job, run_state, error, finished_at, reduce_state in rows:
        by_state = counts.get(job.id, {})
        missing = job.partitions - sum(by_state.values())
        if missing > 0:  # no step row yet: pending
            by_state = {**by_state, "PENDING": by_state.get("PENDING", 0) + missing}
        summaries.append(JobSummary(
            id=job.id, dataset=job.dataset, function=job.function, items=job.items,
            partition_size=job.partition_size, state=job_state(run_state, reduce_state),
            partitions_total=job.partitions, partitions_done=by_state.get("SUCCEEDED", 0),
            partition_states=by_state, error=error, created_at=job.created_at,
            finished_at=finished_at))
    return summaries
