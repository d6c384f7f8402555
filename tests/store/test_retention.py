"""Retention (taskworks/store/retention.py) on SQLite and a real PostgreSQL, and the
undeliverable list's trim on the real Valkey: rows written with old timestamps, the
cleanup run, exactly the expired ones gone."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from taskworks import keys
from taskworks.settings import RetentionSettings
from taskworks.store import retention
from taskworks.store.engine import Store
from taskworks.store.migrate import upgrade
from taskworks.store.tables import (
    DeadLetter,
    MapReduceJob,
    Notification,
    ScalingDecision,
    WorkflowDefinition,
    WorkflowRun,
    WorkflowStepRun,
)

NOW = datetime.now(UTC)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    upgrade(store)
    yield store
    store.dispose()


def add(store: Store, *rows: Any) -> None:
    with store.session() as session:
        session.add_all(rows)


def column(store: Store, col: Any) -> list[Any]:
    with store.session() as session:
        return sorted(session.scalars(select(col)).all())


def count(store: Store, table: Any) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def letter(task_id: str, failed: datetime, replayed: datetime | None = None) -> DeadLetter:
    return DeadLetter(task_id=task_id, name="t", args=[], kwargs={}, attempts=1, reason="x",
                      failed_at=failed, replayed_at=replayed,
                      replay_count=0 if replayed is None else 1)


def notification(subject: str, at: datetime) -> Notification:
    return Notification(created_at=at, channel="email", task_name="t", severity="high",
                        subject=subject, status="sent")


def decision(reason: str, at: datetime) -> ScalingDecision:
    return ScalingDecision(decided_at=at, hostname="h", group="g", previous=1, desired=2,
                           backlog=3, reason=reason, cpu_percent=1.0, memory_percent=1.0,
                           observations={})


def run(run_id: str, workflow: str, state: str, *, created: datetime,
        finished: datetime | None, version: int = 1, steps: int = 2) -> list[Any]:
    return [WorkflowRun(id=run_id, workflow=workflow, version=version, input={}, state=state,
                        remaining=0 if finished else steps, created_at=created,
                        updated_at=created, finished_at=finished),
            *(WorkflowStepRun(run_id=run_id, name=f"s{i}", state="SUCCEEDED", waiting=0,
                              result={"partial": i}) for i in range(steps))]


def definition(name: str, version: int, created: datetime) -> WorkflowDefinition:
    return WorkflowDefinition(name=name, version=version, definition={"steps": []},
                              created_at=created)


def job(job_id: str, created: datetime) -> list[Any]:
    return [MapReduceJob(id=job_id, dataset_id=1, dataset="d", function="count",
                         params={}, partition_size=10, partitions=2, items=20,
                         created_at=created),
            definition(f"mapreduce.{job_id}", 1, created)]


def test_dead_letters_unreplayed_kept_longer_than_replayed(store: Store) -> None:
    add(store, letter("unreplayed-old", ago(91)), letter("unreplayed-recent", ago(89)),
        letter("replayed-old", ago(100), replayed=ago(31)),
        letter("replayed-recent", ago(100), replayed=ago(29)))
    deleted = retention.delete_expired(store, RetentionSettings(), NOW)
    assert (deleted["dead_letters"], deleted["replayed_dead_letters"]) == (1, 1)
    assert column(store, DeadLetter.task_id) == ["replayed-recent", "unreplayed-recent"]


def test_notifications_and_scaling_decisions_by_age_in_batches(store: Store) -> None:
    add(store, *(notification(f"old{i}", ago(31)) for i in range(5)),
        notification("recent", ago(29)),
        *(decision(f"old{i}", ago(15)) for i in range(3)), decision("recent", ago(13)))
    deleted = retention.delete_expired(store, RetentionSettings(batch_size=2), NOW)
    assert (deleted["notifications"], deleted["scaling_decisions"]) == (5, 3)
    assert column(store, Notification.subject) == ["recent"]
    assert column(store, ScalingDecision.reason) == ["recent"]


def test_finished_runs_go_with_their_steps_running_ones_stay(store: Store) -> None:
    add(store, definition("w", 1, ago(60)),
        *run("done-old", "w", "SUCCEEDED", created=ago(40), finished=ago(31), steps=5),
        *run("failed-old", "w", "FAILED", created=ago(40), finished=ago(35)),
        *run("cancelled-recent", "w", "CANCELLED", created=ago(40), finished=ago(29)),
        *run("running-old", "w", "RUNNING", created=ago(100), finished=None))
    # batch 2: a run of 5 steps still goes in one transaction, whole
    deleted = retention.delete_expired(store, RetentionSettings(batch_size=2), NOW)
    assert deleted["workflow_runs"] == 2
    assert column(store, WorkflowRun.id) == ["cancelled-recent", "running-old"]
    assert set(column(store, WorkflowStepRun.run_id)) == {"cancelled-recent", "running-old"}
    assert count(store, WorkflowStepRun) == 4
    assert deleted["workflow_definitions"] == 0  # "w" v1 is its latest version
    assert retention.delete_expired(store, RetentionSettings(), NOW)["workflow_runs"] == 0


def test_mapreduce_jobs_go_with_their_run_steps_and_definition(store: Store) -> None:
    add(store, *job("old", ago(40)),
        *run("old", "mapreduce.old", "SUCCEEDED", created=ago(40), finished=ago(31), steps=3),
        *job("recent", ago(40)),
        *run("recent", "mapreduce.recent", "FAILED", created=ago(40), finished=ago(29)),
        *job("running", ago(100)),
        *run("running", "mapreduce.running", "RUNNING", created=ago(100), finished=None),
        *job("never-started", ago(31)),
        *job("starting", NOW))  # its definition is stored, its run not yet
    deleted = retention.delete_expired(store, RetentionSettings(), NOW)
    assert deleted["mapreduce_jobs"] == 2
    assert deleted["workflow_runs"] == 0  # a job's run is the job's rule's
    assert column(store, MapReduceJob.id) == ["recent", "running", "starting"]
    assert column(store, WorkflowRun.id) == ["recent", "running"]
    assert set(column(store, WorkflowStepRun.run_id)) == {"recent", "running"}
    assert deleted["workflow_definitions"] == 2
    assert column(store, WorkflowDefinition.name) == [
        "mapreduce.recent", "mapreduce.running", "mapreduce.starting"]


def test_job_retention_has_its_own_setting(store: Store) -> None:
    add(store, *job("j", ago(40)),
        *run("j", "mapreduce.j", "SUCCEEDED", created=ago(40), finished=ago(31)))
    settings = RetentionSettings(mapreduce_jobs_days=60, workflow_runs_days=7)
    assert retention.delete_expired(store, settings, NOW)["mapreduce_jobs"] == 0
    assert (column(store, WorkflowRun.id), count(store, WorkflowStepRun)) == (["j"], 2)
    assert column(store, MapReduceJob.id) == ["j"]


def test_definitions_kept_while_used_or_latest(store: Store) -> None:
    add(store, definition("w", 1, ago(60)), definition("w", 2, ago(60)),
        definition("w", 3, ago(60)), definition("other", 1, ago(60)),
        definition("other", 2, ago(1)),
        definition("fresh", 1, ago(1)), definition("fresh", 2, ago(1)),
        *run("uses-w2", "w", "SUCCEEDED", created=ago(5), finished=ago(5), version=2),
        *run("used-w1-long-ago", "w", "SUCCEEDED", created=ago(50), finished=ago(40)))
    deleted = retention.delete_expired(store, RetentionSettings(), NOW)
    assert deleted["workflow_runs"] == 1
    # w v1: superseded, its last run just deleted; other v1: superseded, unused, old;
    # w v2 is used, w v3 and other v2 are the latest, fresh v1 is younger than the runs'
    # retention (a process may still start runs of it)
    assert deleted["workflow_definitions"] == 2
    with store.session() as session:
        kept = sorted(session.execute(select(WorkflowDefinition.name,
                                             WorkflowDefinition.version)).all())
    assert [tuple(r) for r in kept] == [("fresh", 1), ("fresh", 2), ("other", 2), ("w", 2),
                                        ("w", 3)]


def test_nothing_expired_nothing_deleted(store: Store) -> None:
    add(store, letter("l", ago(1)), notification("n", ago(1)), decision("d", ago(1)),
        *job("j", ago(1)), *run("j", "mapreduce.j", "SUCCEEDED", created=ago(1),
                                finished=ago(1)))
    deleted = retention.delete_expired(store, RetentionSettings(), NOW)
    assert set(deleted.values()) == {0}
    assert [count(store, t) for t in (DeadLetter, Notification, ScalingDecision,
                                      MapReduceJob, WorkflowRun, WorkflowDefinition)] \
        == [1, 1, 1, 1, 1, 1]


def test_undeliverable_trimmed_to_the_newest(redis_client: redis.Redis) -> None:
    redis_client.rpush(keys.UNDELIVERABLE, *(f"m{i}" for i in range(15)))
    assert retention.trim_undeliverable(redis_client, 10) == 5
    assert redis_client.lrange(keys.UNDELIVERABLE, 0, -1) == [f"m{i}" for i in range(5, 15)]
    assert retention.trim_undeliverable(redis_client, 10) == 0
