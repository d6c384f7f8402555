"""A workflow and a map-reduce job run across workers on two hosts, with the broker and
the store on a third: correct results, and the journal names both hosts."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from taskworks.workflows import Step, Workflow
from tests.multihost.netns import Worker
from tests.support.wait import wait_for

HOSTS = {"b@hostB", "c@hostC"}
FAN_OUT = 12


def journal_hosts(client: Any, task_ids: Iterable[str], timeout: float = 10
                  ) -> dict[str, list[str]]:
    """task id -> the hostname of each of its successful journal rows, once every task
    has one (workers write the journal in batches, a moment after the task ends)."""
    ids = sorted(set(task_ids))

    def read() -> dict[str, list[str]] | None:
        found: dict[str, list[str]] = {i: [] for i in ids}
        with client.store.session() as session:
            rows = session.execute(
                text("SELECT task_id, hostname FROM journal WHERE state = 'success' "
                     "AND task_id = ANY(:ids)"), {"ids": ids}).all()
        for task_id, hostname in rows:
            found[task_id].append(hostname)
        return found if all(found.values()) else None

    return wait_for(read, timeout=timeout, what="a journal row for every task")


def all_hosts(hosts: dict[str, list[str]]) -> set[str]:
    return {h for names in hosts.values() for h in names}


def fan_out_workflow(name: str, seconds: float) -> Workflow:
    """start -> FAN_OUT parallel branches -> join: join's total is FAN_OUT * (x + 2) + 1."""
    branches = tuple(Step(f"b{i:02d}", "mh.step", depends_on=("start",),
                          params={"label": f"{name}-b{i:02d}", "seconds": seconds})
                     for i in range(FAN_OUT))
    return Workflow(name=name, version=1, steps=(
        Step("start", "mh.step", params={"label": f"{name}-start"}),
        *branches,
        Step("join", "mh.step", depends_on=tuple(b.name for b in branches),
             params={"label": f"{name}-join"}),
    ))


def step_task_ids(status: Any) -> list[str]:
    return [s.task_id for s in status.steps.values() if s.task_id]


def test_workflow_runs_across_both_hosts(
    client: Any, start_worker: Callable[..., Worker]
) -> None:
    start_worker("b")
    start_worker("c")
    client.workflows.register(fan_out_workflow("mh_fan", seconds=0.4))

    status = client.workflows.start("mh_fan", {"x": 10}).wait(timeout=60)

    assert status.state.value == "SUCCEEDED", status.error
    results = status.results()
    assert results["join"]["total"] == FAN_OUT * (10 + 2) + 1
    assert {r["host"] for r in results.values()} == HOSTS
    hosts = journal_hosts(client, step_task_ids(status))
    assert len(hosts) == FAN_OUT + 2
    assert all(len(h) == 1 for h in hosts.values()), hosts  # each step ran once
    assert all_hosts(hosts) == HOSTS


def test_mapreduce_job_runs_across_both_hosts(
    client: Any, start_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    start_worker("b")
    start_worker("c")
    values = [(i * 37) % 101 for i in range(240)]
    path = tmp_path / "values.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "v"])
        writer.writerows(enumerate(values))
    name = f"mh-values-{tmp_path.name}"
    client.jobs.datasets.import_file(path, name)

    job_id = client.jobs.start(name, "mh.slow_sum", {"sleep": 0.3}, partition_size=20)
    client.jobs.wait(job_id, timeout=60)

    assert client.jobs.result(job_id) == {"sum": sum(values), "count": len(values)}
    status = client.jobs.status(job_id)
    assert status.state == "completed"
    assert len(status.partitions) == 12
    run = client.workflows.status(job_id)
    hosts = journal_hosts(client, step_task_ids(run))
    assert len(hosts) == 12 + 1  # the partitions and the reduce
    assert all_hosts(hosts) == HOSTS
