"""Celery's own tools and Flower against a fresh taskworks app (``tests/apps/fresh_tw.py``).

Everything is real: a ``taskworks worker`` process on the session's embedded Valkey, and
``celery -A tests.apps.fresh_tw inspect|control|events`` and Flower as subprocesses, the
way a user who already runs Celery types them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.support.postgres import free_port
from tests.support.wait import wait_for
from tests.support.workers import ROOT

MODULE = "tests.apps.fresh_tw"
FLOWER_AUTH = ("tw", "flower-test-secret")


def _env() -> dict[str, str]:
    # unbuffered: the tests read the tools' output while they run
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _celery(*args: str, timeout: float = 60.0, cwd: Path = ROOT,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "celery", *args], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


class Background:
    """A long-running command in its own process group, its output in a file."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"{' '.join(self.argv)} exited early:\n{self.output()[-3000:]}")
        return True

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


@pytest.fixture
def fresh(redis_client: redis.Redis) -> Any:
    from taskworks.store.migrate import upgrade
    from tests.apps import fresh_tw

    upgrade(fresh_tw.tw.store)  # the worker's journal writes to the session's database
    return fresh_tw


@pytest.fixture
def background(tmp_path: Path) -> Iterator[list[Background]]:
    started: list[Background] = []
    yield started
    for process in reversed(started):
        process.stop()


def test_celery_needs_the_documented_line(tmp_path: Path) -> None:
    """Without ``app = tw.app`` Celery's loader finds no app in the module: the reason
    README.md and docs/control-plane.md tell users to add that line."""
    (tmp_path / "tw_only.py").write_text("from taskworks import Taskworks\n\ntw = Taskworks()\n")
    env = {**_env(), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    done = _celery("-A", "tw_only", "inspect", "ping", cwd=tmp_path, env=env)
    assert done.returncode != 0
    assert "Unable to load celery application" in done.stdout + done.stderr


def test_inspect_control_events_and_flower(fresh: Any, background: list[Background],
                                           tmp_path: Path) -> None:
    hostname = f"tools-{uuid.uuid4().hex[:8]}@localhost"
    worker = Background([sys.executable, "-m", "taskworks", "worker", "--app",
                         f"{MODULE}:tw", "--queues", "default", "--pool", "solo",
                         "--hostname", hostname], tmp_path / "worker.log")
    background.append(worker)
    wait_for(lambda: worker.alive() and fresh.tw.app.control.ping(destination=[hostname],
                                                                  timeout=0.5),
             timeout=60, what=f"worker {hostname} to answer a ping")

    # celery inspect: the worker answers through the module's ``app``
    done = _celery("-A", MODULE, "inspect", "ping", "--destination", hostname,
                   "--timeout", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{hostname}: OK" in done.stdout
    assert "pong" in done.stdout

    # celery control: task events are off by default (worker.task_events); turn them on
    done = _celery("-A", MODULE, "control", "enable_events", "--destination", hostname,
                   "--timeout", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{hostname}: OK" in done.stdout
    assert "task events enabled" in done.stdout

    # celery events --dump and Flower, both subscribed before any task is sent: events
    # are Redis pub/sub, a listener that is not there yet never sees them
    dump = Background([sys.executable, "-m", "celery", "-A", MODULE, "events", "--dump"],
                      tmp_path / "events.log")
    background.append(dump)
    port = free_port()
    flower = Background([sys.executable, "-m", "celery", "-A", MODULE, "flower",
                         f"--port={port}", "--address=127.0.0.1",
                         f"--basic-auth={FLOWER_AUTH[0]}:{FLOWER_AUTH[1]}"],
                        tmp_path / "flower.log")
    background.append(flower)
    # a worker heartbeat in the dump: the dump's receiver is subscribed
    wait_for(lambda: dump.alive() and f"{hostname} [" in dump.output(), timeout=60,
             what="a heartbeat of the worker in celery events --dump")
    web = httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=FLOWER_AUTH, timeout=10)
    try:
        def flower_saw_heartbeat() -> bool:
            flower.alive()
            try:
                metrics = web.get("/metrics")
            except httpx.TransportError:
                return False  # not listening yet
            return f'flower_worker_online{{worker="{hostname}"}} 1.0' in metrics.text

        # Flower's gauge is set from heartbeat events: its receiver is subscribed
        wait_for(flower_saw_heartbeat, timeout=60, interval=0.5,
                 what="Flower to receive the worker's heartbeat")

        results = [fresh.tw.submit("fresh.add", [i, i]) for i in range(3)]
        assert [r.get(timeout=30) for r in results] == [0, 2, 4]
        ids = {r.id for r in results}

        def workers() -> Any:
            listed = web.get("/api/workers", params={"refresh": 1})
            listed.raise_for_status()
            return listed.json().get(hostname)

        info = wait_for(workers, timeout=30, interval=0.5, what="the worker in /api/workers")
        assert "fresh.add" in info["registered"]

        def tasks() -> Any:
            listed = web.get("/api/tasks")
            listed.raise_for_status()
            seen = listed.json()
            done = {i for i in ids if seen.get(i, {}).get("state") == "SUCCESS"}
            return seen if done == ids else None

        seen = wait_for(tasks, timeout=30, interval=0.5, what="the tasks in /api/tasks")
        assert {seen[i]["worker"] for i in ids} == {hostname}
        assert {seen[i]["name"] for i in ids} == {"fresh.add"}
    finally:
        web.close()

    wait_for(lambda: all(f"task succeeded: fresh.add({i})" in dump.output() for i in ids),
             timeout=30, what="the tasks in celery events --dump")
