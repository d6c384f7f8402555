"""``taskworks worker`` without --pool or --group: a set of solo worker processes, supervised
(taskworks/scaling/workerset.py). Real processes on the session's Valkey: the command is
started as a user would, its processes answer Celery's ping and inspect."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from taskworks.runtime.timelimits import HARD_LIMIT_EXIT
from taskworks.scaling.workerset import FAILED_STARTS_TO_GIVE_UP, hostnames
from tests.support.wait import wait_for
from tests.support.workers import ROOT


class WorkerSetProcess:
    """``taskworks worker --app APP --queues default --concurrency N --hostname name@localhost``."""

    def __init__(self, app: Any, count: int, log_path: Path, env: dict[str, str],
                 app_path: str = "tests.apps.sample:tw") -> None:
        self.app = app
        name = f"set-{uuid.uuid4().hex[:8]}"
        self.hostnames = [f"{name}-{i}@localhost" for i in range(1, count + 1)]
        self.log_path = log_path
        self.log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "taskworks", "worker", "--app", app_path, "--queues",
             "default", "--concurrency", str(count), "--hostname", f"{name}@localhost"],
            env={**os.environ, **env}, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        """hostname -> pid of every process of the set that answers inspect."""
        stats = self.app.control.inspect(destination=self.hostnames, timeout=0.5).stats() or {}
        return {name: int(info["pid"]) for name, info in stats.items()}

    def wait_ready(self, timeout: float = 30.0) -> dict[str, int]:
        def ready() -> dict[str, int]:
            if self.proc.poll() is not None:
                raise AssertionError(f"the set exited early:\n{self.output()[-3000:]}")
            pids = self.pids()
            return pids if set(pids) == set(self.hostnames) else {}

        return wait_for(ready, timeout=timeout, interval=0.1, what="every process to answer")

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # its processes die with it (PR_SET_PDEATHSIG)
                self.proc.wait()
        self.log.close()


StartSet = Callable[..., WorkerSetProcess]


@pytest.fixture
def start_set(tw: Any, tmp_path: Path) -> Iterator[StartSet]:
    started: list[WorkerSetProcess] = []

    def start(count: int = 2, ready: bool = True, **kwargs: Any) -> WorkerSetProcess:
        env = kwargs.pop("env", {})
        workers = WorkerSetProcess(tw.app, count, tmp_path / f"set-{len(started)}.log", env,
                                   **kwargs)
        started.append(workers)
        if ready:
            workers.wait_ready()
        return workers

    yield start
    for workers in started:
        workers.stop()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_hostnames_follow_celerys_reading_of_hostname() -> None:
    assert hostnames(2, "w@h.example") == ["w-1@h.example", "w-2@h.example"]
    assert hostnames(1, None) == [f"celery-1@{socket.gethostname()}"]
    assert hostnames(1, "h.example") == ["celery-1@h.example"]  # no @: a host, as Celery reads it
    assert hostnames(2, "%n@%h") == ["%n-1@%h", "%n-2@%h"]  # left for Celery to expand


def test_concurrency_2_starts_two_solo_processes_that_answer_and_run_tasks(
    tw: Any, redis_client: redis.Redis, start_set: StartSet
) -> None:
    workers = start_set(2)
    pids = workers.wait_ready()
    assert sorted(pids) == workers.hostnames  # name-1@host, name-2@host
    assert sorted(pids.values()) == sorted(child.pid for child in workers.children())
    stats = tw.app.control.inspect(destination=workers.hostnames, timeout=1).stats()
    assert all(info["pool"]["implementation"].endswith("solo:TaskPool")
               for info in stats.values())
    replies = tw.app.control.ping(destination=workers.hostnames, timeout=1)
    assert sorted(name for reply in replies for name in reply) == workers.hostnames
    # two 1 s tasks at once: a solo process holds one at a time, so each runs one
    results = [tw.submit("tests.slow_mark", ["both", 1.0]) for _ in range(2)]
    assert sorted(r.get(timeout=20) for r in results) == [1, 2]
    assert {int(redis_client.get(f"both:pid:{run}")) for run in (1, 2)} == set(pids.values())


def test_a_sigkilled_process_is_restarted_and_the_task_it_held_runs_again_once(
    tw: Any, redis_client: redis.Redis, start_set: StartSet
) -> None:
    workers = start_set(2)
    before = workers.wait_ready()
    result = tw.submit("tests.slow_mark", ["held", 2.0])
    wait_for(lambda: redis_client.get("held:runs") == "1", what="the task to start")
    victim = int(redis_client.get("held:pid:1"))
    [hostname] = [name for name, pid in before.items() if pid == victim]
    os.kill(victim, signal.SIGKILL)
    # restarted under the same name, as a new process
    wait_for(lambda: workers.pids().get(hostname) not in (None, victim), timeout=20,
             what=f"a new process answering as {hostname}")
    # its message comes back once the heartbeat lapses, and runs once more
    assert result.get(timeout=30) == 2
    assert redis_client.get("held:runs") == "2"
    assert redis_client.get("held:done") == "1"
    assert "worker process crashed; restarting after backoff" in workers.output()
    assert workers.proc.poll() is None


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_or_ctrl_c_lets_the_task_in_flight_finish_then_all_exit_0(
    tw: Any, redis_client: redis.Redis, start_set: StartSet, stop: signal.Signals
) -> None:
    workers = start_set(2)
    children = workers.children()
    assert len(children) == 2
    result = tw.submit("tests.slow_mark", ["inflight", 2.0])
    wait_for(lambda: redis_client.get("inflight:runs") == "1", what="the task to start")
    workers.proc.send_signal(stop)
    assert workers.proc.wait(30) == 0
    assert result.get(timeout=5) == 1  # finished, result stored, not run twice
    assert redis_client.get("inflight:done") == "1"
    assert all(_gone(child.pid) for child in children)
    # forwarded as SIGTERM, Celery's warm shutdown: a SIGINT would have made them exit 1
    assert workers.output().count("worker process exited") == 2
    assert "returncode=0" in workers.output()
    assert "returncode=1" not in workers.output()


def test_sigquit_is_forwarded_cold_the_task_in_flight_does_not_finish(
    tw: Any, redis_client: redis.Redis, start_set: StartSet
) -> None:
    """SIGQUIT (or a second Ctrl-C) is Celery's cold shutdown: the processes exit at once,
    the task in hand unfinished and unacknowledged (its message comes back through the
    heartbeat)."""
    workers = start_set(2)
    children = workers.children()
    tw.submit("tests.slow_mark", ["cold", 20.0])
    wait_for(lambda: redis_client.get("cold:runs") == "1", what="the task to start")
    workers.proc.send_signal(signal.SIGQUIT)
    assert workers.proc.wait(15) == 0  # long before the task's 20 s
    assert all(_gone(child.pid) for child in children)
    assert redis_client.get("cold:done") is None
    assert "signal=SIGQUIT" in workers.output()


def test_processes_recycled_after_solo_max_tasks_are_replaced_and_each_task_runs_once(
    tw: Any, redis_client: redis.Redis, start_set: StartSet
) -> None:
    workers = start_set(2, env={"TASKWORKS_WORKER__SOLO_MAX_TASKS": "3"})
    first = workers.wait_ready()
    results = [tw.submit("tests.record", [f"r{i}"]) for i in range(10)]
    assert sorted(r.get(timeout=40)["label"] for r in results) == sorted(
        f"r{i}" for i in range(10))
    recorded = [entry.split("|") for entry in redis_client.lrange("tests:order", 0, -1)]
    assert sorted(label for label, _, _ in recorded) == sorted(f"r{i}" for i in range(10))
    ran_in = {int(pid) for _, _, pid in recorded}
    assert len(ran_in) >= 4  # 3 tasks per process at most
    assert set(workers.wait_ready().values()) != set(first.values())
    output = workers.output()
    assert "worker process recycled (exit 0); starting a new one" in output
    assert "worker process crashed" not in output


def test_a_process_ended_by_a_hard_time_limit_is_restarted(
    tw: Any, redis_client: redis.Redis, start_set: StartSet
) -> None:
    workers = start_set(1)
    [(hostname, pid)] = workers.wait_ready().items()
    tw.app.tasks["tests.ignores_soft_limit"].apply_async([30], soft_time_limit=0.5,
                                                         time_limit=1)
    wait_for(lambda: workers.pids().get(hostname) not in (None, pid), timeout=20,
             what="a new process after the hard time limit")
    output = workers.output()
    assert "hard time limit exceeded" in output
    assert f"returncode={HARD_LIMIT_EXIT}" in output


def test_the_processes_die_with_a_sigkilled_set(start_set: StartSet) -> None:
    workers = start_set(2)
    children = workers.children()
    assert len(children) == 2
    workers.proc.kill()
    workers.proc.wait()
    wait_for(lambda: all(_gone(child.pid) for child in children), timeout=5,
             what="the processes to die with their parent")


def test_processes_that_keep_failing_at_start_end_the_set_with_one_line(
    start_set: StartSet
) -> None:
    workers = start_set(1, ready=False, app_path="tests.apps.fails_in_worker:tw",
                        env={"TASKWORKS_AUTOSCALE__RESTART_BACKOFF": "0.05"})
    assert workers.proc.wait(60) == 1  # the processes' own exit status
    output = workers.output()
    assert output.count("this app does not load in a solo worker process") \
        >= FAILED_STARTS_TO_GIVE_UP
    assert (f"error: worker process {workers.hostnames[0]} failed at start "
            f"{FAILED_STARTS_TO_GIVE_UP} times in a row (exit status 1)") in output
