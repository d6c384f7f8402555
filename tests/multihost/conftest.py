"""Three hosts on a private bridge: A runs Valkey and PostgreSQL, B and C run workers.

The network, Valkey and PostgreSQL live for the whole test process (each pytest-xdist
process builds its own, on its own subnet); each test gets fresh workers on B and C and
an empty broker. Without root or ``ip netns``, every test here is skipped with the reason.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text

from tests.multihost import netns
from tests.support.workers import ROOT

QUEUES = ["default", "cpu_intensive", "io_intensive", "priority", "scheduled",
          "host_b", "host_c"]
#: short, so that a partitioned host's messages come back within seconds; it still
#: exceeds the longest time a message waits in a worker (4 held per pool slot, tasks
#: of 0.6 s at most)
VISIBILITY_TIMEOUT = 6
SETTINGS: dict[str, Any] = {
    "visibility_timeout": VISIBILITY_TIMEOUT,
    "queues": QUEUES,
    # threads: two tasks at once, and each worker holds up to 4 messages per slot
    "worker_groups": {"multihost": {"queues": ["default"], "pool": "threads",
                                    "concurrency": 2, "prefetch_multiplier": 4}},
    # a partitioned holder's lease lapses quickly, its duplicates re-check often
    "idempotency": {"lease_seconds": 1.5, "wait_interval": 0.3},
    "journal": {"flush_interval": 0.1},
}


def _xdist_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker[2:].isdigit() else 0


@dataclass
class Cluster:
    net: netns.Network
    valkey: netns.Valkey
    postgres: netns.Postgres
    dir: Path

    @property
    def a(self) -> netns.Host:
        return self.net.hosts["a"]

    def settings(self, db: int = 0) -> dict[str, Any]:
        return {**SETTINGS, "broker_url": self.valkey.url.rsplit("/", 1)[0] + f"/{db}",
                "database_url": self.postgres.url}

    def worker_env(self, db: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKWORKS_")}
        for key, value in self.settings(db).items():
            env[f"TASKWORKS_{key.upper()}"] = (value if isinstance(value, str)
                                               else json.dumps(value))
        env.update({"TASKWORKS_DATA_DIR": str(self.dir / "worker-data"),
                    "TASKWORKS_LOG_LEVEL": "INFO", "PYTHONPATH": str(ROOT)})
        return env


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    reason = netns.unavailable()
    if reason:
        pytest.skip(f"multi-host tests skipped: {reason}")  # listed by -ra
    # a run that was SIGKILLed left its namespaces, links, processes and work dir: remove
    # them (only those of dead owners, and of this pid: nothing of ours exists yet)
    removed = netns.remove_stale(also=os.getpid())
    if removed:
        print(f"removed what an earlier multi-host run left: {', '.join(removed)}",
              file=sys.stderr)
    work = netns.work_dir()
    subnet = netns.free_subnet(os.getpid() + 97 * _xdist_index())
    net = netns.Network(["a", "b", "c"], subnet=subnet)
    try:
        valkey = netns.Valkey(net.hosts["a"], work / "valkey")
        valkey.start()
        postgres = netns.Postgres(net.hosts["a"], work / "pg")
        postgres.start()
        built = Cluster(net, valkey, postgres, work)
        from taskworks.settings import load_settings
        from taskworks.store.migrate import upgrade
        from tests.multihost.app import EFFECTS_DDL, make_app

        client = make_app(load_settings(**built.settings()))
        upgrade(client.store)
        with client.store.session() as session:
            session.execute(text(EFFECTS_DDL))
        client.store.dispose()
        yield built
    finally:
        net.destroy()
        shutil.rmtree(work, ignore_errors=True)


_TESTS = itertools.count(1)


@pytest.fixture
def broker_db() -> int:
    """A Redis database number of this test's own: kombu pools broker connections per
    URL for the whole process, and a test that restarts Valkey leaves dead ones behind."""
    return next(_TESTS) % 16


@pytest.fixture
def client(cluster: Cluster, broker_db: int) -> Iterator[Any]:
    """The app in the test process (on the bridge, like an operator's machine), with an
    empty broker and no side effects recorded yet."""
    from taskworks.settings import load_settings
    from tests.multihost.app import make_app

    app = make_app(load_settings(**cluster.settings(broker_db)))
    with redis.Redis.from_url(cluster.valkey.url) as r:
        r.flushall()
    with app.store.session() as session:
        session.execute(text("TRUNCATE mh_effects"))
    yield app
    app.store.dispose()


@pytest.fixture
def start_worker(cluster: Cluster, client: Any, broker_db: int, tmp_path: Path
                 ) -> Iterator[Callable[..., netns.Worker]]:
    """Start ``taskworks worker`` on host ``b`` or ``c``; stopped after the test."""
    started: list[netns.Worker] = []

    def start(host: str, queues: list[str] | None = None,
              concurrency: int | None = None) -> netns.Worker:
        worker = netns.Worker(cluster.net.hosts[host], cluster.worker_env(broker_db),
                              queues or ["default", "cpu_intensive", f"host_{host}"],
                              cluster.dir, concurrency=concurrency)
        started.append(worker)
        return worker.wait_ready(client.app)

    yield start
    for worker in started:
        worker.stop()
    for worker in started:
        # keep the workers' logs of a failed test next to its other output
        shutil.copy(worker.log_path, tmp_path / worker.log_path.name)
