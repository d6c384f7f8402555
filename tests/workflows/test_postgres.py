"""The engine on PostgreSQL: real workers, the run's row lock and the conditional UPDATEs
under concurrent completions (the SQLite runs elsewhere serialise writers anyway)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from sqlalchemy import text

from taskworks import Taskworks
from taskworks.settings import load_settings
from taskworks.store.engine import make_engine
from taskworks.store.migrate import upgrade
from tests.apps import workflow_steps
from tests.support.workers import WorkerProcess
from tests.workflows.conftest import rec, workflow


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    name = f"wf_{uuid.uuid4().hex[:10]}"
    admin = make_engine(postgres_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_tw(tw: Any, pg_url: str) -> Iterator[Taskworks]:
    """A client on the PostgreSQL store, with the sample app's step tasks."""
    client = Taskworks(settings=load_settings(database_url=pg_url))
    workflow_steps.register(client)
    upgrade(client.store)
    yield client
    client.store.dispose()


def test_many_joins_on_postgres_each_step_runs_once(
        pg_tw: Taskworks, pg_url: str, redis_client: redis.Redis,
        start_worker: Callable[..., WorkerProcess]) -> None:
    env = {"TASKWORKS_DATABASE_URL": pg_url}
    for _ in range(2):
        start_worker(["default"], env=env, pool="prefork", concurrency=2)
    n = 30
    steps = [rec("root")] + [rec(f"b{i}", "root") for i in range(n)] + [
        rec(f"j{i}", f"b{i}", f"b{i + 1}") for i in range(n - 1)] + [
        rec("end", *[f"j{i}" for i in range(n - 1)])]
    wf = pg_tw.workflows.register(workflow("pg-joins", *steps))
    status = pg_tw.workflows.start(wf.name).wait(timeout=90)
    assert status.state == "SUCCEEDED"
    ran = [str(x) for x in redis_client.lrange("wf:order", 0, -1)]
    assert sorted(ran) == sorted(s.name for s in steps)
    assert {s.tries for s in status.steps.values()} == {1}
    position = {name: i for i, name in enumerate(ran)}
    for step in steps:
        assert all(position[d] < position[step.name] for d in step.depends_on)

    # cancel and resume on PostgreSQL too
    slow = pg_tw.workflows.register(workflow(
        "pg-cancel", rec("a", sleep=1.0, key="wf:pg"), rec("b", "a", key="wf:pg")))
    run = pg_tw.workflows.start(slow.name)
    assert run.cancel().state == "CANCELLED"
    resumed = run.retry().wait(timeout=60)
    assert resumed.state == "SUCCEEDED"
    assert {n: s.attempt for n, s in resumed.steps.items()} == {"a": 2, "b": 2}
