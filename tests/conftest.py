"""Shared fixtures: the real embedded Valkey, a real PostgreSQL, real Celery workers.

The session's Valkey and settings go into the environment before any test imports the
sample app, so every process (this one and the workers) sees the same configuration.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from taskworks.broker.embedded import EmbeddedBroker
from tests.support.postgres import PostgresServer, free_port
from tests.support.workers import ROOT, WorkerProcess

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="tw-tests-"))
_BROKER = EmbeddedBroker(_SESSION_DIR / "data", port=free_port())
_SERVER, _ = _BROKER.start()

os.environ.update({
    "TASKWORKS_BROKER_URL": _SERVER.url,
    "TASKWORKS_DATA_DIR": str(_SESSION_DIR / "data"),
    "TASKWORKS_DATABASE_URL": f"sqlite:///{_SESSION_DIR / 'taskworks.db'}",
    "TASKWORKS_LOG_LEVEL": "INFO",
    "PYTHONPATH": str(ROOT),
})
for _name in list(os.environ):
    # a developer's own configuration must not leak into the tests
    if _name.startswith("TASKWORKS_") and _name not in {
        "TASKWORKS_BROKER_URL", "TASKWORKS_DATA_DIR", "TASKWORKS_DATABASE_URL",
        "TASKWORKS_LOG_LEVEL", "TASKWORKS_TEST_POSTGRES_URL", "TASKWORKS_SOAK_TASKS",
        "TASKWORKS_SOAK_RAW_KILLS", "TASKWORKS_SOAK_OUTAGE_TASKS",
    }:
        del os.environ[_name]


#: long tests (a minute or more each): started first, so that the other test process is
#: not left idle at the end while one of them runs alone
LONGEST = ("tests/soak/test_soak.py", "tests/soak/test_soak_outages.py",
           "tests/bench/test_harness.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not any(part in item.nodeid for part in LONGEST))


def pytest_unconfigure(config: pytest.Config) -> None:
    _BROKER.stop()


@pytest.fixture(scope="session")
def broker_url() -> str:
    return _SERVER.url


@pytest.fixture
def redis_client(broker_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(broker_url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def sample() -> Any:
    from taskworks.store.migrate import upgrade
    from tests.apps import sample

    upgrade(sample.tw.store)
    return sample


@pytest.fixture
def tw(sample: Any, redis_client: redis.Redis) -> Any:
    return sample.tw


@pytest.fixture
def start_worker(tw: Any, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(queues: list[str] | None = None, *, env: dict[str, str] | None = None,
              ready: bool = True, **kwargs: Any) -> WorkerProcess:
        worker = WorkerProcess(tw.app, {**os.environ, **(env or {})},
                               queues or ["default"], log_dir=tmp_path, **kwargs)
        started.append(worker)
        return worker.wait_ready() if ready else worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    external = os.environ.get("TASKWORKS_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    server = PostgresServer()
    server.start()
    yield server.url
    server.destroy()


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A migrated PostgreSQL of the test's own: stopping it (a store outage, injected
    for real) disturbs no other test."""
    from taskworks.store.engine import Store
    from taskworks.store.migrate import upgrade

    server = PostgresServer()
    server.start()
    upgrade(Store(server.url))
    yield server
    server.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of each kind the store supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    from sqlalchemy import create_engine, text

    base: str = request.getfixturevalue("postgres_url")
    name = f"t_{os.getpid()}_{abs(hash(request.node.nodeid)) % 10**8}"
    admin = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield base.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
