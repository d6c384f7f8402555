"""Request and response bodies (pydantic): the OpenAPI schema at /docs is built from them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskworks.mapreduce.functions.params import JobParams
from taskworks.mapreduce.partitions import DEFAULT_PARTITION_SIZE
from taskworks.workflows.validate import MAX_VERSION

#: a year: further than any visibility timeout; also keeps Celery's eta arithmetic finite
MAX_COUNTDOWN = 365 * 86_400.0
#: what a task id or run id in a path may hold
ID_PATTERN = r"^[A-Za-z0-9._:@\-]{1,200}$"
#: a breaker name (resilience/breaker.py check_name)
BREAKER_PATTERN = r"^[A-Za-z0-9._:@/\-]{1,200}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- tasks ---------------------------------------------------------------------------
class TaskSubmit(Strict):
    name: str = Field(min_length=1, max_length=255, description="a registered task name")
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue: str | None = Field(default=None, max_length=128)
    priority: int | None = Field(default=None, ge=0, le=9, description="9 the most urgent")
    countdown: float | None = Field(default=None, ge=0, le=MAX_COUNTDOWN,
                                    description="seconds; waits in the durable schedule")
    expires: float | None = Field(default=None, gt=0, le=MAX_COUNTDOWN,
                                  description="seconds from now: not started by then, it "
                                  "is not run (journaled expired)")


class TaskSubmitted(BaseModel):
    id: str
    name: str
    queue: str


class Attempt(BaseModel):
    attempt: int
    state: str
    hostname: str | None
    started_at: datetime | None
    finished_at: datetime
    duration_ms: float | None
    exc_type: str | None
    exc_message: str | None


class TaskProgress(BaseModel):
    id: str
    state: str
    current: float | None
    total: float | None
    percent: float
    status: str


class TaskResult(BaseModel):
    id: str
    state: str
    ready: bool
    result: Any = None
    error: str | None = None


class TaskStatus(TaskResult):
    name: str | None
    progress: TaskProgress
    attempts: list[Attempt]


class Revoke(Strict):
    terminate: bool = Field(default=False, description="also kill it if it is running")


class Revoked(BaseModel):
    id: str
    revoked: bool
    terminate: bool


# -- journal and dead letters -----------------------------------------------------------
class JournalItem(BaseModel):
    id: int
    task_id: str
    name: str
    queue: str | None
    state: str
    attempt: int
    args: Any
    kwargs: Any
    result: str | None
    exc_type: str | None
    exc_message: str | None
    traceback: str | None
    severity: str | None
    hostname: str | None
    pid: int | None
    started_at: datetime | None
    finished_at: datetime
    duration_ms: float | None


class JournalStats(BaseModel):
    window: int
    #: attempts by journal state
    counts: dict[str, int]
    #: tasks ended (success or failure) per second
    throughput: float
    #: failures / (successes + failures)
    failure_rate: float


class DeadLetterItem(BaseModel):
    id: int
    task_id: str
    name: str
    queue: str | None
    args: Any
    kwargs: Any
    exc_type: str | None
    exc_message: str | None
    traceback: str | None
    severity: str | None
    attempts: int
    reason: str
    failed_at: datetime
    replay_count: int
    replayed_at: datetime | None
    replay_task_id: str | None


class DeadLetterFilters(Strict):
    task: str | None = Field(default=None, max_length=255)
    exception: str | None = Field(default=None, max_length=255)
    since: str | None = Field(default=None, max_length=32, description="e.g. 30m, 1h, 7d")


class Replay(Strict):
    # ids bounded like the path's letter id: a larger int overflows the store's INTEGER
    ids: list[Annotated[int, Field(ge=1, le=2**62)]] = Field(
        default_factory=list, max_length=1000, description="dead letters to replay")
    all: bool = Field(default=False, description="every letter matching the filters instead")
    filters: DeadLetterFilters = Field(default_factory=DeadLetterFilters)


class Replayed(BaseModel):
    #: dead letter id -> the new task id
    replayed: dict[int, str]


class Purged(BaseModel):
    deleted: int


# -- queues, workers, health, autoscale --------------------------------------------------
class QueueInfo(BaseModel):
    name: str
    waiting: int
    unacked: int
    backlog: int


class WorkerInfo(BaseModel):
    hostname: str
    active: int
    processed: int
    pool: dict[str, Any]
    active_tasks: list[dict[str, Any]]


class Workers(BaseModel):
    workers: list[WorkerInfo]
    timeout: float


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    broker: bool
    store: bool
    errors: dict[str, str]


class Autoscale(BaseModel):
    running: bool
    status: dict[str, Any] | None
    decisions: list[dict[str, Any]]


class GroupReplicas(BaseModel):
    desired: int
    backlog: int
    queues: dict[str, int]
    emergency: bool
    min: int
    max: int


# -- breakers --------------------------------------------------------------------------
class Breaker(BaseModel):
    name: str
    state: str
    failures: int
    successes: int
    failures_total: int
    retry_after: float
    probe_in_flight: bool
    changed_at: str | None
    last_transition: str | None
    last_reason: str | None
    last_error: str | None
    transitions: int
    failure_threshold: int | None
    reset_timeout: float | None
    recent: list[dict[str, Any]] = Field(default_factory=list)


class BreakerReset(Strict):
    reason: str = Field(default="reset from the API", min_length=1, max_length=500)


# -- workflows -------------------------------------------------------------------------
class WorkflowSummary(BaseModel):
    name: str
    version: int
    created_at: datetime


class RunStart(Strict):
    input: Any = None
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)


class RunCancel(Strict):
    terminate: bool = False


class StepItem(BaseModel):
    name: str
    task: str | None
    depends_on: list[str]
    state: str
    attempt: int
    tries: int
    task_id: str | None
    skip_reason: str | None
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    error: str | None


class RunItem(BaseModel):
    id: str
    workflow: str
    version: int
    state: str
    error: str | None
    failed_step: str | None
    resumes: int
    created_at: datetime
    finished_at: datetime | None


class RunDetail(RunItem):
    input: Any
    steps: list[StepItem]


# -- map-reduce: datasets and jobs --------------------------------------------------------
class DatasetItemModel(BaseModel):
    item_index: int
    data: Any


class DatasetModel(BaseModel):
    name: str
    source: str
    origin: str | None
    state: str
    row_count: int
    columns: list[str]
    created_at: datetime


class DatasetDetail(DatasetModel):
    #: the first items (``?head=``, default 5)
    head: list[DatasetItemModel]


class DatasetDeleted(BaseModel):
    name: str
    deleted_items: int


class JobStart(Strict):
    dataset: str = Field(min_length=1, max_length=255, description="a dataset's name")
    function: str = Field(min_length=1, max_length=128,
                          description="validation, transformation, analysis, aggregation "
                                      "or a registered custom function")
    params: JobParams = Field(default_factory=dict)
    partition_size: int = Field(default=DEFAULT_PARTITION_SIZE, ge=1, le=2**31 - 1,
                                description="items per partition")
    on_partition_failure: Literal["fail", "reduce"] = Field(
        default="fail", description="fail: a partition that failed for good fails the job; "
        "reduce: reduce over the partitions that succeeded (the job ends partial)")


class JobCancel(Strict):
    terminate: bool = Field(default=False, description="also kill running partitions")


class PartitionItem(BaseModel):
    index: int
    #: the half-open item range [start, end)
    start: int
    end: int
    state: str
    tries: int
    error: str | None
    #: 100 once the partition succeeded, else 0 (a partition is done or not)
    percent: float


class JobItem(BaseModel):
    id: str
    dataset: str
    function: str
    items: int
    partition_size: int
    #: running, completed, failed, cancelled, or partial (reduced over the partitions
    #: that succeeded; the others are in ``failed_partitions``)
    state: str
    partitions_total: int
    partitions_done: int
    #: partitions by step state (PENDING, QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED...)
    partition_states: dict[str, int]
    #: partitions done / partitions, 0-100 (100 for a job of no partition once completed)
    percent: float
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class JobDetail(JobItem):
    #: the reduce step's state
    reduce: str
    #: fail or reduce (over the partitions that succeeded)
    on_partition_failure: str
    #: indexes of the partitions that failed
    failed_partitions: list[int]
    partitions: list[PartitionItem]


class JobResult(BaseModel):
    id: str
    state: str
    #: true once the job completed and its result is stored
    ready: bool
    result: Any = None
