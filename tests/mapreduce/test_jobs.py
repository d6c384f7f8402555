"""Map-reduce jobs on real workers: results equal the in-process run; failures, cancel,
retry and a SIGKILLed worker redo only what is missing and still give the exact result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from taskworks.errors import InvalidInput
from taskworks.mapreduce.local import run_local
from taskworks.runtime.retry import RetryPolicy
from taskworks.store.tables import MapReduceJob, WorkflowRun
from tests.mapreduce.conftest import load
from tests.mapreduce.test_functions import (
    AGGREGATION,
    ANALYSIS,
    FIXED,
    TRANSFORMATION,
    VALIDATION,
)
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess

POOL = {"pool": "threads", "concurrency": 2}
SHORT_VISIBILITY = {"TASKWORKS_VISIBILITY_TIMEOUT": "3"}
NO_RETRY = RetryPolicy(max_retries=0)


def counts(tw: Any) -> tuple[int, int]:
    with tw.store.session() as session:
        return (session.scalar(select(func.count()).select_from(MapReduceJob)) or 0,
                session.scalar(select(func.count()).select_from(WorkflowRun)) or 0)


def runs(client: redis.Redis, key: str, firsts: range) -> dict[int, int]:
    return {first: int(client.get(f"{key}:runs:{first}") or 0) for first in firsts}


def test_builtins_on_workers_equal_the_in_process_run(
        tw: Any, start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker(["cpu_intensive"], **POOL)
    info = load(tw.store, FIXED * 4)  # 200 items
    for function, params in (("validation", VALIDATION), ("analysis", ANALYSIS),
                             ("aggregation", AGGREGATION)):
        job = tw.jobs.start(info.name, function, params, partition_size=37)
        status = tw.jobs.wait(job, timeout=60)
        assert status.state == "completed", status.to_dict()
        assert (status.done, len(status.partitions)) == (6, 6)
        assert [(p.start, p.end) for p in status.partitions][-2:] == [(148, 185), (185, 200)]
        assert status.reduce_state == "SUCCEEDED"
        expected = run_local(tw.store, info.name, function, params, 37).result
        assert tw.jobs.result(job) == expected, function

    job = tw.jobs.start(info.name, "transformation",
                        {**TRANSFORMATION, "output": f"{info.name}-t"}, partition_size=64)
    assert tw.jobs.wait(job, timeout=60).state == "completed"
    result = tw.jobs.result(job)
    assert (result["output_dataset"], result["items"]) == (f"{info.name}-t", 200)
    output = tw.jobs.datasets.get(f"{info.name}-t")
    assert (output.state, output.row_count) == ("ready", 200)
    run_local(tw.store, info.name, "transformation",
              {**TRANSFORMATION, "output": f"{info.name}-local"}, 64)
    assert tw.jobs.datasets.head(f"{info.name}-t", 300) == \
        tw.jobs.datasets.head(f"{info.name}-local", 300)


def test_bad_input_starts_nothing(tw: Any) -> None:
    info = load(tw.store, [{"v": 1}])
    before = counts(tw)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"function": "nope", "params": {}}, "function"),
        ({"function": "validation", "params": {}, "on_partition_failure": "skip"},
         "on_partition_failure"),
        ({"function": "transformation", "params": {}, "on_partition_failure": "reduce"},
         "on_partition_failure"),
        ({"function": "validation", "params": {"type_validations": {"v": "number"}}},
         "params.type_validations.v"),
        ({"function": "transformation",
          "params": {"calculated_fields": {"x": "__import__('os')"}}},
         "params.calculated_fields.x"),
        ({"function": "validation", "params": {"required_fields": ["v"]},
          "partition_size": 0}, "partition_size"),
        ({"function": "validation", "params": {"required_fields": ["v"]},
          "dataset": "missing"}, "dataset"),
    ]
    for case, field in cases:
        kwargs = {"dataset": info.name, "partition_size": 10, **case}
        with pytest.raises(InvalidInput) as caught:
            tw.jobs.start(**kwargs)
        assert caught.value.field == field
    assert counts(tw) == before
    assert not tw.jobs.datasets.exists(f"{info.name}_transformed")
    with pytest.raises(InvalidInput, match="the id of a map-reduce job"):
        tw.jobs.status("no-such-job")


def test_failed_partition_then_retry_redoes_only_it(
        tw: Any, redis_client: redis.Redis,
        start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker(["cpu_intensive"], **POOL)
    info = load(tw.store, [{"v": i} for i in range(50)])
    redis_client.set("f:fail:20", 1)
    job = tw.jobs.start(info.name, "tests.slow_sum", {"key": "f"}, 10, retries=NO_RETRY)
    status = tw.jobs.wait(job, timeout=60)
    assert status.state == "failed"
    assert [(p.index, p.error) for p in status.failed] == [
        (2, "RuntimeError: partition at 20 told to fail")]
    assert status.reduce_state != "SUCCEEDED"
    with pytest.raises(InvalidInput, match="a completed job"):
        tw.jobs.result(job)
    # fail fast: the partitions still queued or running were cancelled with the job
    done_before = {p.start for p in status.partitions if p.state == "SUCCEEDED"}
    assert {p.state for p in status.partitions if p.start not in done_before} <= {
        "FAILED", "CANCELLED"}

    redis_client.delete("f:fail:20")
    tw.jobs.retry(job)
    status = tw.jobs.wait(job, timeout=60)
    assert status.state == "completed"
    assert tw.jobs.result(job) == {"sum": sum(range(50)), "count": 50}
    # the partitions that had succeeded were not run again; the failed one was
    executions = runs(redis_client, "f", range(0, 50, 10))
    assert all(executions[first] == 1 for first in done_before), executions
    assert executions[20] == 2
    with pytest.raises(InvalidInput, match="a failed, cancelled or partial job"):
        tw.jobs.retry(job)


def test_reduce_policy_reduces_the_partitions_that_succeeded_then_retry_completes(
        tw: Any, redis_client: redis.Redis,
        start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker(["cpu_intensive"], **POOL)
    info = load(tw.store, [{"v": i} for i in range(50)])
    redis_client.set("r:fail:20", 1)
    redis_client.set("r:fail:40", 1)
    job = tw.jobs.start(info.name, "tests.slow_sum", {"key": "r"}, 10, retries=NO_RETRY,
                        on_partition_failure="reduce")
    status = tw.jobs.wait(job, timeout=60)
    # no fail fast: every other partition ran, and the reduce ran over them
    assert status.state == "partial", status.to_dict()
    assert status.on_partition_failure == "reduce"
    assert [p.index for p in status.failed] == [2, 4]
    assert status.to_dict()["failed_partitions"] == [2, 4]
    assert [p.state for p in status.partitions] == [
        "SUCCEEDED", "SUCCEEDED", "FAILED", "SUCCEEDED", "FAILED"]
    assert status.reduce_state == "SUCCEEDED"
    partial = sum(range(0, 20)) + sum(range(30, 40))
    assert tw.jobs.result(job) == {"sum": partial, "count": 30}

    redis_client.delete("r:fail:20", "r:fail:40")
    redis_client.set("r:hold:20", 1)  # the retried partition waits until the test has looked
    assert tw.jobs.retry(job).state == "running"
    with pytest.raises(InvalidInput, match="a completed job"):
        tw.jobs.result(job)  # the partial result is no longer the job's
    redis_client.delete("r:hold:20")
    status = tw.jobs.wait(job, timeout=60)
    assert status.state == "completed", status.to_dict()
    assert tw.jobs.result(job) == {"sum": sum(range(50)), "count": 50}
    assert runs(redis_client, "r", range(0, 50, 10)) == {0: 1, 10: 1, 20: 2, 30: 1, 40: 2}


def test_reduce_policy_with_every_partition_failed_fails_the_job(
        tw: Any, redis_client: redis.Redis,
        start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker(["cpu_intensive"], **POOL)
    info = load(tw.store, [{"v": i} for i in range(10)])
    redis_client.set("a:fail:0", 1)
    job = tw.jobs.start(info.name, "tests.slow_sum", {"key": "a"}, 10, retries=NO_RETRY,
                        on_partition_failure="reduce")
    status = tw.jobs.wait(job, timeout=60)
    assert status.state == "failed", status.to_dict()
    assert status.reduce_state == "FAILED"
    assert "every partition failed" in (tw.workflows.status(job).steps["reduce"].error or "")


def test_cancel_then_retry(tw: Any, redis_client: redis.Redis,
                           start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker(["cpu_intensive"], pool="solo")
    info = load(tw.store, [{"v": i} for i in range(60)])
    job = tw.jobs.start(info.name, "tests.slow_sum", {"key": "c", "sleep": 0.3}, 10)
    wait_for(lambda: tw.jobs.status(job).done >= 2, what="two partitions done")
    status = tw.jobs.cancel(job)
    assert status.state == "cancelled"
    done_before = {p.start for p in status.partitions if p.state == "SUCCEEDED"}
    assert 2 <= len(done_before) < 6
    assert {p.state for p in status.partitions} <= {"SUCCEEDED", "CANCELLED"}

    tw.jobs.retry(job)
    status = tw.jobs.wait(job, timeout=60)
    assert status.state == "completed"
    assert tw.jobs.result(job) == {"sum": sum(range(60)), "count": 60}
    executions = runs(redis_client, "c", range(0, 60, 10))
    assert all(executions[first] == 1 for first in done_before), executions
    assert all(count >= 1 for count in executions.values())


def test_sigkilled_worker_mid_job_still_gives_the_exact_result(
        tw: Any, redis_client: redis.Redis,
        start_worker: Callable[..., WorkerProcess]) -> None:
    first = start_worker(["cpu_intensive"], env=SHORT_VISIBILITY, pool="solo")
    info = load(tw.store, [{"v": i * 3} for i in range(80)])
    job = tw.jobs.start(info.name, "tests.slow_sum", {"key": "k", "sleep": 0.4}, 10)
    wait_for(lambda: tw.jobs.status(job).done >= 2
             and any(p.state == "RUNNING" for p in tw.jobs.status(job).partitions),
             what="two partitions done and one running")
    first.kill()  # SIGKILL mid-partition: its message was never acknowledged
    done_before = {p.start for p in tw.jobs.status(job).partitions if p.state == "SUCCEEDED"}
    assert tw.jobs.status(job).state == "running"

    start_worker(["cpu_intensive"], env=SHORT_VISIBILITY, pool="solo")
    status = tw.jobs.wait(job, timeout=90)
    assert status.state == "completed", status.to_dict()
    assert tw.jobs.result(job) == {"sum": 3 * sum(range(80)), "count": 80}
    executions = runs(redis_client, "k", range(0, 80, 10))
    assert all(executions[first] == 1 for first in done_before), executions
    assert any(p.tries == 2 for p in status.partitions)  # the killed one, redelivered


def test_empty_dataset_job_reduces_nothing(
        tw: Any, start_worker: Callable[..., WorkerProcess], tmp_path: Any) -> None:
    start_worker(["cpu_intensive"], **POOL)
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    info = tw.jobs.datasets.import_file(path, f"empty-{tmp_path.name}")
    job = tw.jobs.start(info.name, "validation", {"required_fields": ["a"]}, 10)
    status = tw.jobs.wait(job, timeout=60)
    assert (status.state, status.partitions) == ("completed", [])
    assert tw.jobs.result(job) == {"total": 0, "valid": 0, "invalid": 0, "errors": {}}
