"""An adopted Celery project's own tasks run through the runtime, whichever command
started the worker: journal, Celery's retries journaled, dead letters with replay,
severity, the opt-out."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import redis
from sqlalchemy import select

from taskworks import keys
from taskworks.store.tables import DeadLetter, JournalEntry
from tests.support.wait import wait_for
from tests.support.workers import ROOT, WorkerProcess

PROJECT = "tests.apps.celery_project"
QUEUES = ["celery"]


@pytest.fixture
def project(tw: Any) -> Any:
    from tests.apps import celery_project

    return celery_project


def _rows(store: Any, name: str) -> list[JournalEntry]:
    with store.session() as session:
        return list(session.scalars(select(JournalEntry).where(JournalEntry.name == name)
                                    .order_by(JournalEntry.id)))


def _letters(store: Any, name: str) -> list[DeadLetter]:
    with store.session() as session:
        return list(session.scalars(select(DeadLetter).where(DeadLetter.name == name)))


def _states(store: Any, name: str, count: int) -> list[str]:
    return wait_for(lambda: [r.state for r in rows] if len(rows := _rows(store, name)) >= count
                    else None, timeout=30, what=f"{count} journal rows of {name}")


@pytest.mark.parametrize("command", ["celery", "taskworks"])
def test_adopted_project_tasks_run_through_the_runtime(
    command: str, project: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    if command == "celery":
        start_worker(QUEUES, app_path=PROJECT, celery_cli=True, pool="prefork", concurrency=2)
    else:
        start_worker(QUEUES, app_path=f"{PROJECT}:tw", pool="prefork", concurrency=2)

    assert project.add.delay(2, 3).get(timeout=30) == 5
    assert project.shared.delay(4).get(timeout=30) == 8
    assert project.late.delay(1).get(timeout=30) == 2  # declared after Taskworks(app=app)
    assert project.retry_once.delay("r1").get(timeout=30) == "second time lucky"
    flaky = project.flaky.delay("f1")
    with pytest.raises(ConnectionError):
        flaky.get(timeout=30)
    broken = project.broken.delay(7)
    with pytest.raises(ValueError):
        broken.get(timeout=30)
    with pytest.raises(RuntimeError):
        project.critical.delay(1).get(timeout=30)
    assert project.outside.delay(3).get(timeout=30) == 3

    for name in ("proj.add", "proj.shared", "proj.late"):
        assert _states(store, name, 1) == ["success"]
    # Celery's own retry options keep their meaning, and each retry is journaled
    assert _states(store, "proj.retry_once", 2) == ["retry", "success"]
    retry_row = _rows(store, "proj.retry_once")[0]
    assert (retry_row.exc_type, retry_row.attempt) == ("TimeoutError", 1)
    assert _states(store, "proj.flaky", 3) == ["retry", "retry", "failure"]
    assert redis_client.get("f1:runs") == "3"  # max_retries=2: three runs, as in Celery
    assert _states(store, "proj.broken", 1) == ["failure"]
    # Celery's retries exhausted, and a plain failure: each a dead letter, once
    [flaky_letter] = wait_for(lambda: _letters(store, "proj.flaky"), what="flaky's letter")
    assert (flaky_letter.reason, flaky_letter.attempts, flaky_letter.exc_type) == (
        "max_retries", 3, "ConnectionError")
    assert flaky_letter.task_id == flaky.id
    [broken_letter] = wait_for(lambda: _letters(store, "proj.broken"), what="broken's letter")
    assert (broken_letter.reason, broken_letter.args) == ("failed", [7])
    # the severity option given through Celery's task options
    assert _states(store, "proj.critical", 1) == ["failure"]
    assert _rows(store, "proj.critical")[0].severity == "critical"
    # the opt-out: no row at all
    assert _rows(store, "proj.outside") == []


def test_dead_letter_of_an_adopted_task_replays_from_the_cli(
    project: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker(QUEUES, app_path=PROJECT, celery_cli=True)
    with pytest.raises(ValueError):
        project.broken.delay(1).get(timeout=30)
    [letter] = wait_for(lambda: _letters(store, "proj.broken"), what="the dead letter")
    listed = subprocess.run(
        [sys.executable, "-m", "taskworks", "dlq", "list", "--app", f"{PROJECT}:tw"],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "proj.broken" in listed.stdout
    replayed = subprocess.run(
        [sys.executable, "-m", "taskworks", "dlq", "replay", str(letter.id),
         "--app", f"{PROJECT}:tw"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert replayed.returncode == 0, replayed.stderr
    # the replay ran (and failed again) through the runtime: a second failure row
    assert _states(store, "proj.broken", 2) == ["failure", "failure"]
    assert len(_letters(store, "proj.broken")) == 2


def test_adoption_leaves_celery_canvas_tasks_and_plain_calls_alone(project: Any) -> None:
    from taskworks.runtime.adoption import adopt_tasks

    adopted = set(adopt_tasks(project.app, project.tw.runtime))
    assert {"proj.add", "proj.flaky", "proj.shared", "proj.late"} <= adopted
    assert "proj.outside" not in adopted
    assert not any(name.startswith("celery.") for name in adopted)
    assert adopt_tasks(project.app, project.tw.runtime) == []  # once only
    assert project.add(2, 2) == 4  # a direct call is the plain function, no chain
    assert project.add.apply(args=(1, 1)).get() == 2


def test_adopted_app_opts_into_the_atomic_take_transport(
    project: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """The README's one line: the project's workers take messages with taskworks' Lua
    take (and wake tokens); the project's clients keep kombu's transport."""
    start_worker(QUEUES, app_path=PROJECT, celery_cli=True, env={"PROJ_TRANSPORT": "taskworks"})
    assert project.add.delay(20, 22).get(timeout=30) == 42
    assert _states(store, "proj.add", 1) == ["success"]
    # what only taskworks' take does: an entry that is not kombu's JSON is set aside,
    # where kombu's BRPOP would pop it and lose it
    redis_client.lpush("celery", "not a kombu message")
    wait_for(lambda: redis_client.lrange(keys.UNDELIVERABLE, 0, -1) == ["not a kombu message"],
             what="the stray entry set aside")
