"""Map-reduce jobs on the workflow engine: one partition step per partition, one reduce.

A job is a workflow generated for it (``mapreduce.<job id>``): N steps ``p<index>``
running the map task on the ``cpu_intensive`` queue, and a ``reduce`` step depending on
all of them. The engine (docs/workflows.md) does the rest, with the guarantees it has
for every workflow: each partition's partial is recorded as its step's result in the
store; the reduce is dispatched exactly once, when the last partition is done; a
SIGKILLed worker's partition is redelivered; ``retry`` runs again only the partitions
that failed or were cancelled (succeeded ones keep their partials) and then the reduce.
The job's id is its workflow run's id; its row in ``processing_results`` holds what it
runs on and, once reduced, the final result.

The partial-failure policy is part of the generated workflow, so it survives restarts
with the run: ``fail`` (partitions fail fast: the first failure cancels the rest) or
``reduce`` (partitions ``on_failure: continue``, the reduce ``run_if_failed``: it runs
over the partitions that succeeded, and the job ends ``partial``, its failed partitions
listed; ``retry`` redoes them and reduces again).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import update

from taskworks.errors import AllPartitionsFailed, InvalidInput
from taskworks.mapreduce.datasets import DatasetInfo, Datasets
from taskworks.mapreduce.functions import JobContext, MapContext
from taskworks.mapreduce.partitions import (
    DEFAULT_PARTITION_SIZE,
    Partition,
    plan,
    read_partition,
)
from taskworks.mapreduce.registry import FunctionRegistry
from taskworks.runtime.retry import RetryPolicy
from taskworks.store.engine import Store
from taskworks.store.tables import MapReduceJob, utcnow
from taskworks.workflows.model import OnFailure, RunState, Step, StepState, Workflow

if TYPE_CHECKING:
    from taskworks.mapreduce.listing import JobSummary
    from taskworks.workflows.api import Workflows

__all__ = [
    "JOB_QUEUE",
    "MAP_TASK",
    "MAX_PARTITIONS",
    "POLICIES",
    "REDUCE_STEP",
    "REDUCE_TASK",
    "WORKFLOW_PREFIX",
    "DeclareTask",
    "JobStatus",
    "Jobs",
    "PartitionFailurePolicy",
    "PartitionStatus",
    "job_state",
    "percent_done",
    "step_name",
]

#: a job's workflow is named this prefix and the job id (retention finds them by it)
WORKFLOW_PREFIX = "mapreduce."
MAP_TASK = "taskworks.mapreduce.map"
REDUCE_TASK = "taskworks.mapreduce.reduce"
JOB_QUEUE = "cpu_intensive"
REDUCE_STEP = "reduce"
#: a plan above this many partitions is refused (each is a step row and a message)
MAX_PARTITIONS = 10_000
_STATES = {RunState.RUNNING: "running", RunState.SUCCEEDED: "completed",
           RunState.FAILED: "failed", RunState.CANCELLED: "cancelled"}
#: what a partition's failure does to its job
PartitionFailurePolicy = Literal["fail", "reduce"]
POLICIES: tuple[PartitionFailurePolicy, ...] = ("fail", "reduce")
#: ``tw.task``: ``declare_task(name=...)`` returns the decorator that makes a task
DeclareTask = Callable[..., Callable[[Callable[..., Any]], Any]]


def job_state(run_state: str, reduce_state: str | None) -> str:
    """running, completed, failed, cancelled, or partial: the run failed (a partition
    did) but the reduce ran over the partitions that succeeded."""
    if run_state == RunState.FAILED.value and reduce_state == StepState.SUCCEEDED.value:
        return "partial"
    return _STATES[RunState(run_state)]


def step_name(index: int) -> str:
    return f"p{index:06d}"


@dataclass(frozen=True)
class PartitionStatus:
    index: int
    start: int
    end: int
    state: str  # the step's: PENDING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED...
    tries: int
    attempt: int
    error: str | None


def percent_done(done: int, total: int, state: str) -> float:
    """Partitions done / partitions, 0-100 (100 for a job of no partition once
    completed)."""
    if total == 0:
        return 100.0 if state == "completed" else 0.0
    return round(100.0 * done / total, 2)


@dataclass(frozen=True)
class JobStatus:
    id: str
    dataset: str
    function: str
    partition_size: int
    items: int
    state: str  # running, completed, failed, cancelled, partial
    partitions: list[PartitionStatus]
    reduce_state: str
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    on_partition_failure: PartitionFailurePolicy = "fail"

    @property
    def done(self) -> int:
        return sum(1 for p in self.partitions if p.state == "SUCCEEDED")

    @property
    def failed(self) -> list[PartitionStatus]:
        return [p for p in self.partitions if p.state == "FAILED"]

    @property
    def finished(self) -> bool:
        return self.state != "running"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "dataset": self.dataset, "function": self.function,
                "partition_size": self.partition_size, "items": self.items,
                "state": self.state, "on_partition_failure": self.on_partition_failure,
                "failed_partitions": [p.index for p in self.failed],
                "partitions_done": self.done,
                "partitions_total": len(self.partitions), "reduce": self.reduce_state,
                "error": self.error, "created_at": self.created_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "partitions": [{"index": p.index, "start": p.start, "end": p.end,
                                "state": p.state, "tries": p.tries, "error": p.error}
                               for p in self.partitions]}


class Jobs:
    """``tw.jobs``: start map-reduce jobs, follow them, cancel and retry them.

    A job is a workflow run of ``workflows``; its row and its datasets are in ``store``;
    ``declare_task`` declares the map and reduce tasks the workers run; ``queue_names``
    says which queues a job may use."""

    def __init__(self, store: Store, workflows: Workflows, declare_task: DeclareTask,
                 queue_names: Callable[[], list[str]]) -> None:
        self.store = store
        self.workflows = workflows
        self.queue_names = queue_names
        #: the functions jobs can name: the built-ins, plus ``functions.custom(...)``
        self.functions = FunctionRegistry()
        self.datasets = Datasets(store)
        self._declare_tasks(declare_task)

    # -- the client side -----------------------------------------------------------------

    def start(self, dataset: str, function: str, params: dict[str, Any] | None = None,
              partition_size: int = DEFAULT_PARTITION_SIZE, *, queue: str = JOB_QUEUE,
              retries: RetryPolicy | None = None,
              on_partition_failure: PartitionFailurePolicy = "fail") -> str:
        """Check everything, plan, prepare outputs and start the job; returns its id.
        Bad input raises InvalidInput before any work is queued. ``retries`` is the
        policy of each partition and of the reduce (default: the app's default policy);
        ``on_partition_failure`` what a partition that failed for good does: ``fail``
        the job, or ``reduce`` over the partitions that succeeded (the job ends
        ``partial`` and lists the failed ones)."""
        params = {} if params is None else params
        fn = self.functions.get(function)
        if on_partition_failure not in POLICIES:
            raise InvalidInput("on_partition_failure", on_partition_failure,
                               " or ".join(POLICIES))
        if on_partition_failure == "reduce" and not fn.partial_results:
            raise InvalidInput("on_partition_failure", on_partition_failure,
                               f"'fail' for the {function} function (its result needs "
                               "every partition)")
        fn.check(params)
        info = self.datasets.get(dataset)
        if info.state != "ready":
            raise InvalidInput("dataset", dataset, f"a ready dataset (it is {info.state})")
        partitions = plan(info.row_count, partition_size)
        if len(partitions) > MAX_PARTITIONS:
            raise InvalidInput("partition_size", partition_size, f"a size giving at most "
                               f"{MAX_PARTITIONS} partitions ({info.row_count} items)")
        queues = self.queue_names()
        if queue not in queues:
            raise InvalidInput("queue", queue, f"one of {', '.join(queues)}")
        job_id = str(uuid.uuid4())
        workflow = self._workflow(job_id, partitions, queue, retries, on_partition_failure)
        self.workflows.validate(workflow)  # before prepare creates anything
        prepared = fn.prepare(params, JobContext(self.store, info, job_id))
        with self.store.session() as session:
            session.add(MapReduceJob(
                id=job_id, dataset_id=info.id, dataset=info.name, function=function,
                params=prepared, partition_size=partition_size, partitions=len(partitions),
                items=info.row_count))
        self.workflows.register(workflow)
        self.workflows.start(workflow.name, {"job_id": job_id}, run_id=job_id)
        return job_id

    def status(self, job_id: str) -> JobStatus:
        row = self._row(job_id)
        run = self.workflows.status(job_id)
        parts = plan(row.items, row.partition_size)
        partitions = []
        for part in parts:
            step = run.steps.get(step_name(part.index))
            partitions.append(PartitionStatus(
                part.index, part.start, part.end, step.state if step else "PENDING",
                step.tries if step else 0, step.attempt if step else 1,
                step.error if step else None))
        reduce = run.steps.get(REDUCE_STEP)
        reduce_state = reduce.state if reduce else "PENDING"
        return JobStatus(job_id, row.dataset, row.function, row.partition_size, row.items,
                         job_state(run.state, reduce_state), partitions, reduce_state,
                         run.error, row.created_at, run.finished_at,
                         self._policy(job_id))

    def _policy(self, job_id: str) -> PartitionFailurePolicy:
        """Read off the job's workflow: its reduce is a join over failures or not."""
        wf = self.workflows.engine.definition(f"{WORKFLOW_PREFIX}{job_id}", 1)
        return "reduce" if wf.step(REDUCE_STEP).run_if_failed else "fail"

    def wait(self, job_id: str, timeout: float | None = None) -> JobStatus:
        """Poll until the job ends (clients only, like ``Run.wait``); WaitTimeout if not."""
        self._row(job_id)
        self.workflows.run(job_id).wait(timeout)
        return self.status(job_id)

    def result(self, job_id: str) -> Any:
        """The final result of a completed job (or of a partial one: over the partitions
        that succeeded; ``status(job_id).failed`` lists the others)."""
        row = self._row(job_id)
        if row.finished_at is None:
            state = _STATES[self.workflows.status(job_id).state]
            raise InvalidInput("job", job_id, f"a completed job (it is {state})")
        return row.result

    def cancel(self, job_id: str, terminate: bool = False) -> JobStatus:
        self._row(job_id)
        self.workflows.run(job_id).cancel(terminate=terminate)
        return self.status(job_id)

    def retry(self, job_id: str) -> JobStatus:
        """Run again the partitions that failed or were cancelled, then the reduce (a
        partial job's reduce too: its result was over the partitions that succeeded)."""
        status = self.status(job_id)
        if status.state not in ("failed", "cancelled", "partial"):
            raise InvalidInput("job", job_id, f"a failed, cancelled or partial job (it is "
                               f"{status.state})")
        self.workflows.run(job_id).retry()
        if status.state == "partial":  # its result is no longer the job's
            with self.store.session() as session:
                session.execute(update(MapReduceJob).where(MapReduceJob.id == job_id)
                                .values(result=None, finished_at=None))
        return self.status(job_id)

    def recent(self, state: str | None = None, limit: int = 50) -> list[JobSummary]:
        """The newest ``limit`` jobs, only those in ``state`` (running, completed,
        failed, cancelled, partial) when given; partitions counted by state."""
        from taskworks.mapreduce.listing import recent_jobs  # it imports this module

        return recent_jobs(self.store, state, limit)

    def _row(self, job_id: str) -> MapReduceJob:
        with self.store.session() as session:
            row = session.get(MapReduceJob, job_id)
            if row is None:
                raise InvalidInput("job", job_id, "the id of a map-reduce job")
            return row

    @staticmethod
    def _workflow(job_id: str, partitions: list[Partition], queue: str,
                  retries: RetryPolicy | None,
                  on_partition_failure: PartitionFailurePolicy = "fail") -> Workflow:
        partial = on_partition_failure == "reduce"
        on_failure = OnFailure.CONTINUE if partial else OnFailure.FAIL_FAST
        steps = [Step(step_name(p.index), MAP_TASK, queue=queue, retries=retries,
                      params={"partition": [p.index, p.start, p.end]}, on_failure=on_failure)
                 for p in partitions]
        reduce = Step(REDUCE_STEP, REDUCE_TASK, depends_on=tuple(s.name for s in steps),
                      queue=queue, retries=retries, run_if_failed=partial)
        return Workflow(name=f"{WORKFLOW_PREFIX}{job_id}", steps=(*steps, reduce),
                        description="a map-reduce job (taskworks.mapreduce.jobs)")

    # -- the worker side (step bodies, run by the workflow engine) -------------------------

    def _declare_tasks(self, declare_task: DeclareTask) -> None:
        @declare_task(name=MAP_TASK)
        def _map(input: dict[str, Any], results: dict[str, Any],
                 partition: list[int]) -> Any:
            return self.map_partition(input["job_id"], Partition(*partition))

        @declare_task(name=REDUCE_TASK)
        def _reduce(input: dict[str, Any], results: dict[str, Any]
                    ) -> dict[str, Any]:
            # a ``reduce`` job's reduce sees only the partitions that succeeded
            partials = [results[name] for name in sorted(results, key=lambda n: int(n[1:]))]
            if not partials and self._row(input["job_id"]).partitions:
                raise AllPartitionsFailed("every partition failed: nothing to reduce")
            return self.reduce(input["job_id"], partials)

    def _context(self, job_id: str) -> tuple[MapReduceJob, DatasetInfo]:
        row = self._row(job_id)
        return row, self.datasets.by_id(row.dataset_id)

    def map_partition(self, job_id: str, partition: Partition) -> Any:
        row, info = self._context(job_id)
        fn = self.functions.get(row.function)
        items = read_partition(self.store, info.id, partition)
        return fn.map_partition(row.params, items,
                                MapContext(self.store, info, job_id, partition))

    def reduce(self, job_id: str, partials: list[Any]) -> dict[str, Any]:
        """Reduce and store the result; idempotent, so a redelivered reduce is harmless."""
        row, info = self._context(job_id)
        fn = self.functions.get(row.function)
        result = fn.reduce(row.params, partials, JobContext(self.store, info, job_id))
        with self.store.session() as session:
            session.execute(update(MapReduceJob).where(MapReduceJob.id == job_id)
                            .values(result=result, finished_at=utcnow()))
        return {"job": job_id, "partitions": len(partials), "stored": True}
