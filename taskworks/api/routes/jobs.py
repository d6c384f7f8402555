"""/api/jobs: start a map-reduce job, list recent ones, status per partition and overall,
result, cancel, retry (``tw.jobs``, docs/mapreduce.md)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import fields
from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from taskworks.api.context import ApiContext, Ctx
from taskworks.api.errors import NotFound
from taskworks.api.models import (
    ID_PATTERN,
    JobCancel,
    JobDetail,
    JobItem,
    JobResult,
    JobStart,
    PartitionItem,
)
from taskworks.errors import InvalidInput
from taskworks.mapreduce.jobs import JobStatus, percent_done
from taskworks.mapreduce.listing import JobState

router = APIRouter(prefix="/api/jobs", tags=["jobs"])

JobId = Annotated[str, Path(pattern=ID_PATTERN, description="the job id")]


def _detail(st: JobStatus) -> JobDetail:
    counts: dict[str, int] = defaultdict(int)
    for p in st.partitions:
        counts[p.state] += 1
    return JobDetail(
        id=st.id, dataset=st.dataset, function=st.function, items=st.items,
        partition_size=st.partition_size, state=st.state,
        partitions_total=len(st.partitions), partitions_done=st.done,
        partition_states=dict(counts), percent=percent_done(st.done, len(st.partitions), st.state),
        error=st.error, created_at=st.created_at, finished_at=st.finished_at,
        reduce=st.reduce_state, on_partition_failure=st.on_partition_failure,
        failed_partitions=[p.index for p in st.failed],
        partitions=[PartitionItem(index=p.index, start=p.start, end=p.end, state=p.state,
                                  tries=p.tries, error=p.error,
                                  percent=100.0 if p.state == "SUCCEEDED" else 0.0)
                    for p in st.partitions])


def _status(ctx: ApiContext, job_id: str) -> JobStatus:
    try:
        return ctx.tw.jobs.status(job_id)
    except InvalidInput:
        raise NotFound("job", job_id) from None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobDetail)
def start(body: JobStart, ctx: Ctx) -> JobDetail:
    """Plan the dataset into partitions of ``partition_size`` items and start the job
    (map tasks on the cpu_intensive queue, then one reduce). Bad parameters, an unknown
    function or dataset are a 422 and nothing is started."""
    job_id = ctx.tw.jobs.start(body.dataset, body.function, body.params, body.partition_size,
                               on_partition_failure=body.on_partition_failure)
    return _detail(_status(ctx, job_id))


@router.get("", response_model=list[JobItem])
def jobs(ctx: Ctx, state: Annotated[JobState | None, Query()] = None,
         limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[JobItem]:
    """Recent jobs, newest first, with their partitions counted by state."""
    return [JobItem(**{f.name: getattr(job, f.name) for f in fields(job)},
                    percent=job.percent) for job in ctx.tw.jobs.recent(state, limit)]


@router.get("/{job_id}", response_model=JobDetail)
def job_status(job_id: JobId, ctx: Ctx) -> JobDetail:
    """The job overall and every partition: its item range, state, tries and error."""
    return _detail(_status(ctx, job_id))


@router.get("/{job_id}/result", response_model=JobResult)
def job_result(job_id: JobId, ctx: Ctx) -> JobResult:
    """The final result once the job completed (``ready``); until then ``ready`` is false.
    A partial job's result is over the partitions that succeeded (its status lists the
    failed ones)."""
    st = _status(ctx, job_id)
    if st.state not in ("completed", "partial"):
        return JobResult(id=job_id, state=st.state, ready=False)
    try:
        result = ctx.tw.jobs.result(job_id)
    except InvalidInput:  # deleted meanwhile
        raise NotFound("job", job_id) from None
    return JobResult(id=job_id, state=st.state, ready=True, result=result)


@router.post("/{job_id}/cancel", response_model=JobDetail)
def cancel(job_id: JobId, ctx: Ctx, body: JobCancel | None = None) -> JobDetail:
    """Cancel the pending partitions and revoke running ones (``terminate`` kills them);
    partitions done keep their partials. A finished job is left as it is."""
    _status(ctx, job_id)
    return _detail(ctx.tw.jobs.cancel(job_id, terminate=body.terminate if body else False))


@router.post("/{job_id}/retry", response_model=JobDetail)
def retry(job_id: JobId, ctx: Ctx) -> JobDetail:
    """Run again the partitions that failed or were cancelled, then the reduce. A job
    that is not failed, cancelled or partial is a 422."""
    _status(ctx, job_id)
    return _detail(ctx.tw.jobs.retry(job_id))
