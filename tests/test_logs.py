"""Every line logged inside a task carries the task id and name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from tests.support.workers import WorkerProcess


def test_lines_inside_a_task_carry_its_id_and_name(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(["default"])
    result = tw.submit("tests.log_inside", ["m-42"])
    result.get(timeout=20)
    worker.stop()  # flushes the log file
    lines = worker.log_path.read_text().splitlines()
    inside = [line for line in lines if "inside the task m-42" in line]
    assert len(inside) == 1
    assert f"task_id={result.id}" in inside[0]
    assert "task_name=tests.log_inside" in inside[0]
    started = [line for line in lines if "task started" in line and result.id in line]
    finished = [line for line in lines if "task finished" in line and result.id in line]
    assert len(started) == 1
    assert len(finished) == 1
    assert "state=SUCCESS" in finished[0]
    # after the task, the context is gone: no line logged later carries its id
    after = lines[lines.index(finished[0]) + 1:]
    assert not [line for line in after if result.id in line and "succeeded" not in line]
