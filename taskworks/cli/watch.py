"""``taskworks watch``: follow a task's progress bar until it finishes."""

from __future__ import annotations

import time

from celery import Celery, states
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from taskworks.errors import InvalidInput
from taskworks.runtime.progress import TaskSnapshot, read_progress


def _label(snapshot: TaskSnapshot) -> str:
    if snapshot.state == states.RETRY and snapshot.error:
        return f"retrying after {snapshot.error}"
    return snapshot.status or snapshot.state.lower()


def watch(app: Celery, task_id: str, *, interval: float = 0.25, timeout: float | None = None,
          console: Console) -> int:
    """Show the task's progress until it is ready; print its result or error.

    Returns the exit code: 0 when the task succeeded, 1 when it failed, was revoked or
    did not finish within ``timeout`` seconds (``None``: wait as long as it takes; an
    unknown id stays ``PENDING`` forever, Celery cannot tell it from a queued task).
    """
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        raise InvalidInput("interval", interval, "a number of seconds > 0")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or timeout < 0):
        raise InvalidInput("timeout", timeout, "a number of seconds >= 0, or none")
    deadline = None if timeout is None else time.monotonic() + timeout
    bar = Progress(
        # markup off: the status is the task's text and may contain [brackets]
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
    )
    with bar:
        row = bar.add_task("", total=100.0)
        while True:
            snapshot = read_progress(app, task_id)
            if snapshot.state in (states.FAILURE, states.REVOKED):
                # the last progress is gone from the backend: leave the bar where it stopped
                bar.update(row, description=_label(snapshot))
            else:
                # percent, not current/total: known in every state (a retry starts over at 0)
                bar.update(row, completed=snapshot.percent, description=_label(snapshot))
            if snapshot.ready:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(interval)
    if snapshot.state == states.SUCCESS:
        console.print("succeeded; result:", highlight=False)
        # default=repr: an adopted app may use a serializer that returns non-JSON values
        console.print_json(data=snapshot.result, default=repr)
        return 0
    if not snapshot.ready:
        console.print(f"timed out after {timeout}s: task {task_id} is still {snapshot.state}",
                      style="yellow", markup=False, highlight=False)
        return 1
    verb = "failed" if snapshot.state == states.FAILURE else snapshot.state.lower()
    console.print(f"{verb}: {snapshot.error}", style="red", markup=False, highlight=False)
    return 1
