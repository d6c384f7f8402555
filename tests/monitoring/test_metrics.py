"""/metrics: Prometheus text that parses, carries every family, and counts the work of
every worker process (computed from the journal, not from one process' memory)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from taskworks.monitoring.metrics import FAMILIES, registry_for
from taskworks.workflows import Step, Workflow
from tests.api.server import TOKEN, ApiServer
from tests.support.wait import wait_for


@pytest.fixture
def api(tw: Any) -> Iterator[httpx.Client]:
    server = ApiServer(tw, token=TOKEN).start()
    with server.client() as client:
        yield client
    server.stop()


def registry_of(tw: Any, client: redis.Redis) -> CollectorRegistry:
    """The registry the API builds, from ``tw``'s parts (taskworks/api/app.py)."""
    return registry_for(tw.store, client, tw.settings, tw.breakers, tw.queue_names,
                        tw.app.control.ping)


def scrape(api: httpx.Client) -> dict[str, Any]:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def sample(families: dict[str, Any], family: str, name: str | None = None,
           **labels: str) -> float | None:
    for s in families[family].samples:
        if (name is None or s.name == name) and all(s.labels.get(k) == v
                                                     for k, v in labels.items()):
            return float(s.value)
    return None


def test_every_family_is_there_even_on_an_idle_system(api: httpx.Client) -> None:
    families = scrape(api)
    assert set(FAMILIES) <= set(families)
    assert sample(families, "taskworks_queue_depth", queue="default", state="waiting") == 0
    assert sample(families, "taskworks_breaker_state", breaker="tests.guarded",
                  state="closed") == 1
    assert families["taskworks_tasks"].type == "counter"
    assert families["taskworks_task_duration_seconds"].type == "histogram"
    assert all(s.value == 0 for s in families["taskworks_scrape_errors"].samples)
    # every job state is a series from the start, so an alert on failed jobs has one
    assert {s.labels["state"] for s in families["taskworks_jobs"].samples} >= {
        "running", "completed", "failed", "cancelled"}
    assert sample(families, "taskworks_datasets", state="building") is not None


def test_counts_aggregate_every_worker_process(api: httpx.Client, tw: Any,
                                               redis_client: redis.Redis,
                                               start_worker: Callable[..., Any]) -> None:
    before = scrape(api)
    ok_before = sample(before, "taskworks_tasks", "taskworks_tasks_total", task="tests.echo",
                       outcome="success") or 0
    failed_before = sample(before, "taskworks_tasks", "taskworks_tasks_total",
                           task="tests.echo", outcome="failure") or 0
    letters_before = sample(before, "taskworks_dead_letters") or 0
    # two worker processes, one per queue: each runs half the tasks
    start_worker(["default"])
    start_worker(["io_intensive"])
    for i in range(1, 7):
        tw.submit("tests.echo", [i], {"fail_every": 3},
                  queue="default" if i % 2 else "io_intensive")
    key = f"flaky-{uuid.uuid4().hex[:6]}"
    tw.submit("tests.flaky", [key, 1])  # one retry, then success

    def counted() -> dict[str, Any] | None:
        families = scrape(api)
        ok = sample(families, "taskworks_tasks", "taskworks_tasks_total", task="tests.echo",
                    outcome="success") or 0
        retried = sample(families, "taskworks_task_retries", "taskworks_task_retries_total",
                         task="tests.flaky") or 0
        return families if ok - ok_before == 4 and retried >= 1 else None
    families = wait_for(counted, timeout=30, what="the tasks in /metrics")
    assert sample(families, "taskworks_tasks", "taskworks_tasks_total", task="tests.echo",
                  outcome="failure") == failed_before + 2
    # the two processes' attempts are both in the counts
    hosts = {r["hostname"] for r in api.get("/api/journal", params={
        "task": "tests.echo", "limit": 6}).json()}
    assert len(hosts) == 2
    count = sample(families, "taskworks_task_duration_seconds",
                   "taskworks_task_duration_seconds_count", task="tests.echo")
    inf = sample(families, "taskworks_task_duration_seconds",
                 "taskworks_task_duration_seconds_bucket", task="tests.echo", le="+Inf")
    assert count is not None
    assert count == inf
    assert count >= 6
    assert sample(families, "taskworks_dead_letters") == letters_before + 2
    assert sample(families, "taskworks_dead_letters_by_task", task="tests.echo") is not None
    # workers answer a ping, cached a few seconds: the first scrape saw none yet
    wait_for(lambda: sample(scrape(api), "taskworks_workers") == 2, timeout=20,
             what="both workers in taskworks_workers")


def test_queue_depth_breakers_and_workflow_runs(api: httpx.Client, tw: Any,
                                                redis_client: redis.Redis,
                                                start_worker: Callable[..., Any]) -> None:
    for _ in range(4):
        tw.submit("tests.echo", [1], queue="scheduled")
    name = f"metrics-{uuid.uuid4().hex[:6]}"
    tw.workflows.register(Workflow(name=name, steps=(
        Step("a", "wf.record", params={"label": "a", "key": "wf:metrics"}),)))
    start_worker(["default"])
    tw.workflows.start(name).wait(timeout=30)
    redis_client.set("brk-metrics:fail", 1)
    for _ in range(2):
        tw.submit("tests.guarded", ["brk-metrics"])
    wait_for(lambda: tw.breakers.show("tests.guarded").state.value == "open",
             what="the breaker to open")
    families = scrape(api)
    assert sample(families, "taskworks_queue_depth", queue="scheduled", state="waiting") == 4
    assert sample(families, "taskworks_breaker_state", breaker="tests.guarded",
                  state="open") == 1
    assert sample(families, "taskworks_breaker_state", breaker="tests.guarded",
                  state="closed") == 0
    assert sample(families, "taskworks_breaker_failures", "taskworks_breaker_failures_total",
                  breaker="tests.guarded") == 2
    assert sample(families, "taskworks_workflow_runs", workflow=name, state="SUCCEEDED") == 1
    desired = sample(families, "taskworks_autoscale_desired_replicas", group="general")
    assert desired is not None
    assert desired >= 1


def test_a_part_that_cannot_be_read_is_reported_and_the_rest_still_served(
        redis_client: redis.Redis, broker_url: str, tmp_path: Any) -> None:
    from prometheus_client import generate_latest

    from taskworks import Taskworks
    from taskworks.settings import load_settings

    # a store that cannot be opened: the directory does not exist
    broken = Taskworks(settings=load_settings(
        database_url=f"sqlite:///{tmp_path / 'missing' / 'store.db'}"))
    text = generate_latest(registry_of(broken, redis_client)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    errors = {s.labels["part"]: s.value for s in families["taskworks_scrape_errors"].samples}
    assert errors["tasks"] == 1
    assert errors["dead_letters"] == 1
    assert errors["jobs"] == 1
    assert errors["datasets"] == 1
    assert errors["queues"] == 0
    assert sample(families, "taskworks_queue_depth", queue="default", state="waiting") == 0


def test_counters_and_histogram_on_each_store(database_url: str, redis_client: redis.Redis
                                              ) -> None:
    """The collector's SQL (GROUP BY, CASE buckets) on SQLite and PostgreSQL alike."""
    from datetime import UTC, datetime

    from prometheus_client import generate_latest

    from taskworks import Taskworks
    from taskworks.settings import load_settings
    from taskworks.store.migrate import upgrade
    from taskworks.store.tables import JournalEntry

    tw = Taskworks(settings=load_settings(database_url=database_url))
    upgrade(tw.store)
    now = datetime.now(UTC)
    rows = [("a", "success", 3.0), ("a", "success", 40.0), ("a", "failure", 2000.0),
            ("a", "retry", 1.0), ("b", "success", None)]
    with tw.store.session() as session:
        session.add_all(JournalEntry(task_id=f"id-{i}", name=name, queue="default",
                                     state=state, attempt=1, args=[], kwargs={},
                                     finished_at=now, duration_ms=ms)
                        for i, (name, state, ms) in enumerate(rows))
    text = generate_latest(registry_of(tw, redis_client)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    total = "taskworks_tasks_total"
    assert sample(families, "taskworks_tasks", total, task="a", outcome="success") == 2
    assert sample(families, "taskworks_tasks", total, task="a", outcome="failure") == 1
    assert sample(families, "taskworks_tasks", total, task="b", outcome="success") == 1
    assert sample(families, "taskworks_task_retries", "taskworks_task_retries_total",
                  task="a") == 1
    bucket = "taskworks_task_duration_seconds_bucket"
    hist = "taskworks_task_duration_seconds"
    assert sample(families, hist, bucket, task="a", le="0.005") == 2  # 1 ms and 3 ms
    assert sample(families, hist, bucket, task="a", le="0.05") == 3
    assert sample(families, hist, bucket, task="a", le="2.5") == 4
    assert sample(families, hist, bucket, task="a", le="+Inf") == 4
    assert sample(families, hist, "taskworks_task_duration_seconds_sum",
                  task="a") == pytest.approx(2.044)
    assert sample(families, hist, bucket, task="b", le="+Inf") is None  # no duration
    tw.store.engine.dispose()


def test_jobs_by_state_and_datasets(api: httpx.Client, tw: Any, redis_client: redis.Redis,
                                    start_worker: Callable[..., Any], tmp_path: Any) -> None:
    from taskworks.runtime.retry import RetryPolicy

    before = scrape(api)
    completed = sample(before, "taskworks_jobs", state="completed") or 0
    failed = sample(before, "taskworks_jobs", state="failed") or 0
    ready = sample(before, "taskworks_datasets", state="ready") or 0
    path = tmp_path / "numbers.jsonl"
    path.write_text("".join(f'{{"v": {i}}}\n' for i in range(20)))
    info = tw.jobs.datasets.import_file(path, f"metrics-{uuid.uuid4().hex[:8]}")
    start_worker(["cpu_intensive"], pool="threads", concurrency=2)
    key = f"metrics-job-{uuid.uuid4().hex[:6]}"
    ok = tw.jobs.start(info.name, "tests.slow_sum", {"key": key}, 10)
    assert tw.jobs.wait(ok, timeout=60).state == "completed"
    redis_client.set(f"{key}:fail:0", 1)  # the partition starting at item 0 fails
    bad = tw.jobs.start(info.name, "tests.slow_sum", {"key": key}, 10,
                        retries=RetryPolicy(max_retries=0))
    assert tw.jobs.wait(bad, timeout=60).state == "failed"

    families = scrape(api)
    assert sample(families, "taskworks_jobs", state="completed") == completed + 1
    assert sample(families, "taskworks_jobs", state="failed") == failed + 1
    assert sample(families, "taskworks_datasets", state="ready") == ready + 1
    # a job's generated workflow is counted as a job, not as a workflow of its own
    assert not [s for s in families["taskworks_workflow_runs"].samples
                if s.labels["workflow"].startswith("mapreduce.")]


def test_jobs_and_datasets_on_each_store(database_url: str, redis_client: redis.Redis
                                         ) -> None:
    """The jobs join and the datasets count on SQLite and PostgreSQL alike."""
    from prometheus_client import generate_latest

    from taskworks import Taskworks
    from taskworks.settings import load_settings
    from taskworks.store.migrate import upgrade
    from taskworks.store.tables import Dataset, MapReduceJob, WorkflowRun

    tw = Taskworks(settings=load_settings(database_url=database_url))
    upgrade(tw.store)
    runs = [("RUNNING", "j1"), ("SUCCEEDED", "j2"), ("SUCCEEDED", "j3"), ("FAILED", "j4")]
    with tw.store.session() as session:
        session.add_all([Dataset(name="d1", source="csv", state="ready", columns=[]),
                         Dataset(name="d2", source="job", state="building", columns=[])])
        for state, job_id in runs:
            session.add(WorkflowRun(id=job_id, workflow=f"mapreduce.{job_id}", version=1,
                                    input={}, state=state, remaining=0))
            session.add(MapReduceJob(id=job_id, dataset_id=1, dataset="d1",
                                     function="validation", params={},
                                     partition_size=10, partitions=1, items=1))
        session.add(WorkflowRun(id="plain", workflow="etl", version=1, input={},
                                state="SUCCEEDED", remaining=0))
    text = generate_latest(registry_of(tw, redis_client)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {s.labels["state"]: s.value for s in families["taskworks_jobs"].samples} == {
        "running": 1, "completed": 2, "failed": 1, "cancelled": 0}
    assert {s.labels["state"]: s.value for s in families["taskworks_datasets"].samples} == {
        "ready": 1, "building": 1}
    assert [s.labels["workflow"] for s in families["taskworks_workflow_runs"].samples] == [
        "etl"]
    tw.store.engine.dispose()


def test_scheduled_tasks_oldest_due_and_mover_lag(tw: Any, redis_client: redis.Redis) -> None:
    from prometheus_client import generate_latest

    def scraped() -> dict[str, Any]:
        text = generate_latest(registry_of(tw, redis_client)).decode()
        return {f.name: f for f in text_string_to_metric_families(text)}

    idle = scraped()
    assert sample(idle, "taskworks_scheduled_tasks", queue="default") == 0
    assert sample(idle, "taskworks_scheduled_oldest_due_seconds") is None  # none scheduled
    assert sample(idle, "taskworks_schedule_mover_lag_seconds") == 0
    tw.submit("tests.echo", [1], countdown=600)
    tw.submit("tests.echo", [2], countdown=900, queue="io_intensive")
    families = scraped()
    assert sample(families, "taskworks_scheduled_tasks", queue="default") == 1
    assert sample(families, "taskworks_scheduled_tasks", queue="io_intensive") == 1
    assert 590 < (sample(families, "taskworks_scheduled_oldest_due_seconds") or 0) <= 600
    assert sample(families, "taskworks_schedule_mover_lag_seconds") == 0
    assert all(s.value == 0 for s in families["taskworks_scrape_errors"].samples)


def test_expired_is_an_outcome_and_scheduled_is_not(tw: Any, redis_client: redis.Redis) -> None:
    from datetime import UTC, datetime

    from prometheus_client import generate_latest

    from taskworks.store.tables import JournalEntry

    name = f"tests.states.{uuid.uuid4().hex[:8]}"
    with tw.store.session() as session:
        for state in ("scheduled", "expired"):
            session.add(JournalEntry(task_id=uuid.uuid4().hex, name=name, queue="default",
                                     state=state, attempt=1, args=[], kwargs={},
                                     finished_at=datetime.now(UTC)))
    text = generate_latest(registry_of(tw, redis_client)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert sample(families, "taskworks_tasks", task=name, outcome="expired") == 1
    assert sample(families, "taskworks_tasks", task=name, outcome="scheduled") is None
