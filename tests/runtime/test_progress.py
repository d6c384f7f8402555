"""Progress tracking against real workers and the real Valkey: published in the task,
read from other processes, shown by ``watch``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from taskworks.errors import InvalidInput, TaskworksError
from taskworks.runtime.progress import TaskSnapshot, percent_of, progress, read_progress
from tests.support.wait import wait_for
from tests.support.workers import ROOT, WorkerProcess

# Reads the task's progress from a process of its own until the task is ready; prints
# every distinct snapshot it saw, in order.
READER = """
import json, sys, time
from taskworks.runtime.progress import read_progress
from tests.apps.sample import tw

task_id, limit = sys.argv[1], float(sys.argv[2])
print("ready", flush=True)
seen = []
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    s = read_progress(tw.app, task_id)
    row = [s.state, s.percent, s.current, s.total, s.status]
    if not seen or seen[-1] != row:
        seen.append(row)
    if s.ready:
        break
    time.sleep(0.01)
print(json.dumps({"seen": seen, "result": s.result}))
"""

WATCHER = """
import sys
from rich.console import Console
from taskworks.cli.watch import watch
from tests.apps.sample import tw

task_id, timeout, tty = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "tty"
print("ready", file=sys.stderr, flush=True)
sys.exit(watch(tw.app, task_id, interval=0.05, timeout=timeout,
               console=Console(force_terminal=tty, width=100)))
"""


def python(script: str, *args: str) -> list[str]:
    return [sys.executable, "-c", script, *args]


def run_watch(task_id: str, timeout: float = 30, tty: bool = False
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(python(WATCHER, task_id, str(timeout), "tty" if tty else "plain"),
                          cwd=ROOT, env={**os.environ, "NO_COLOR": "1"},
                          capture_output=True, text=True, timeout=timeout + 30)


def finished(tw: Any, task_id: str) -> TaskSnapshot:
    # 60 s: a failing task goes through the default retry policy's backoff first
    return wait_for(lambda: (p := read_progress(tw.app, task_id)).ready and p,
                    timeout=60, what=f"task {task_id} to finish")


# -- progress read from another process while the task runs ---------------------------------


def test_second_process_sees_progress_move(
    tw: Any, start_worker: Callable[..., WorkerProcess], redis_client: redis.Redis
) -> None:
    start_worker()
    task_id = str(uuid.uuid4())
    reader = subprocess.Popen(python(READER, task_id, "60"), cwd=ROOT, env=os.environ,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert reader.stdout is not None
    assert reader.stderr is not None
    # submit only once the reader is polling, so it cannot miss the first steps
    assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
    tw.submit("tests.stepper", [8, 0.15], task_id=task_id)
    out, err = reader.communicate(timeout=90)
    assert reader.returncode == 0, err
    report = json.loads(out)
    seen = report["seen"]
    percents = [row[1] for row in seen]

    intermediate = [p for p in percents if 0 < p < 100]
    assert len(intermediate) >= 2, seen
    assert intermediate == sorted(intermediate), seen
    assert seen[-1][:2] == ["SUCCESS", 100.0], seen
    assert report["result"] == {"steps": 8}
    for state, percent, current, total, status in seen:
        if state == "PROGRESS":
            assert total == 8
            assert status == f"step {current}"
            assert percent == round(current / 8 * 100, 1)
    # what the reader saw is what is in Valkey: the task's result key, now final
    stored = json.loads(redis_client.get(f"celery-task-meta-{task_id}") or "{}")
    assert stored["status"] == "SUCCESS"


def test_read_progress_of_success_and_failure(
    tw: Any, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker()
    ok = tw.submit("tests.stepper", [3, 0])
    bad = tw.submit("tests.stepper", [2, 0], {"fail": True})

    done = finished(tw, ok.id)
    assert done.state == "SUCCESS"
    assert done.percent == 100
    assert done.result == {"steps": 3}
    assert done.error is None
    assert done.succeeded

    failed = finished(tw, bad.id)
    assert failed.state == "FAILURE"
    assert failed.error == "ValueError: boom at the end"
    assert failed.result is None
    assert not failed.succeeded


def test_read_progress_of_unknown_id_is_pending(tw: Any) -> None:
    snapshot = read_progress(tw.app, str(uuid.uuid4()))
    assert snapshot.state == "PENDING"
    assert snapshot.percent == 0
    assert not snapshot.ready


# -- progress() misuse ------------------------------------------------------------------------


def test_progress_outside_a_task_raises() -> None:
    with pytest.raises(TaskworksError, match="must be called inside a task"):
        progress(1, 2)


def test_progress_in_a_task_called_directly_raises(sample: Any) -> None:
    # a direct call runs the body with no task id: there is no result to publish to
    with pytest.raises(TaskworksError, match="must be called inside a task"):
        sample.stepper(1, 0)


@pytest.mark.parametrize(("current", "total", "status", "field"), [
    (-1, 10, "", "current"),
    (1, -10, "", "total"),
    (11, 10, "", "current"),
    ("3", 10, "", "current"),
    (1, None, "", "total"),
    (True, 10, "", "current"),
    (float("nan"), 10, "", "current"),
    (1, float("inf"), "", "total"),
    (1, 10, 5, "status"),
])
def test_progress_rejects_bad_arguments(current: Any, total: Any, status: Any,
                                        field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        progress(current, total, status)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: got ")


def test_percent_rounds_to_one_decimal_and_is_zero_for_empty_work() -> None:
    assert percent_of(1, 3) == 33.3
    assert percent_of(2, 3) == 66.7
    assert percent_of(3, 3) == 100.0
    assert percent_of(0, 0) == 0


# -- watch, as a real process -------------------------------------------------------------------


def test_watch_success_exits_0_and_prints_the_result(
    tw: Any, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker()
    task = tw.submit("tests.stepper", [3, 0.1])
    done = run_watch(task.id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "succeeded; result:" in done.stdout
    result = json.loads(done.stdout.split("result:", 1)[1])
    assert result == {"steps": 3}


def test_watch_failure_exits_1_and_prints_the_error(
    tw: Any, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker()
    task = tw.submit("tests.stepper", [2, 0.1], {"fail": True})
    done = run_watch(task.id, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed: ValueError: boom at the end" in done.stdout


def test_watch_times_out_with_exit_1(tw: Any) -> None:
    task_id = str(uuid.uuid4())  # never submitted: stays PENDING
    done = run_watch(task_id, timeout=0.5)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"timed out after 0.5s: task {task_id} is still PENDING" in done.stdout


def test_watch_bar_follows_the_steps_on_a_terminal(
    tw: Any, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker()
    # submit only once the watcher (a new interpreter, slow to start on a loaded machine)
    # is watching, so that it sees the steps
    task_id = str(uuid.uuid4())
    watcher = subprocess.Popen(python(WATCHER, task_id, "30", "tty"), cwd=ROOT,
                               env={**os.environ, "NO_COLOR": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert watcher.stderr is not None
    assert watcher.stderr.readline().strip() == "ready"
    tw.submit("tests.stepper", [8, 0.5], task_id=task_id)
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, out + err
    # the live bar was redrawn with the task's own status while it ran
    assert any(f"step {k}" in out for k in range(1, 8)), out
    assert "100.0%" in out


def test_taskworks_watch_command(tw: Any, start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker()
    task = tw.submit("tests.stepper", [2, 0.1])
    done = subprocess.run(
        [sys.executable, "-m", "taskworks", "watch", task.id, "--timeout", "60", "--app",
         "tests.apps.sample:tw"], cwd=ROOT, env=os.environ, capture_output=True, text=True,
        timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.split("result:", 1)[1]) == {"steps": 2}
    unknown = subprocess.run(
        [sys.executable, "-m", "taskworks", "watch", str(uuid.uuid4()), "--timeout", "0.3",
         "--app", "tests.apps.sample:tw"], cwd=ROOT, env=os.environ, capture_output=True,
        text=True, timeout=60)
    assert unknown.returncode == 1
    assert "still PENDING" in unknown.stdout
