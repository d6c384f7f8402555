"""The workflow built-in tasks: the step wrapper and the periodic recovery sweep."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from taskworks.declaring import TaskDecorator
from taskworks.workflows.engine import STEP_TASK, SWEEP_TASK

if TYPE_CHECKING:
    from taskworks.workflows.api import Workflows

__all__ = ["SWEEP_EVERY", "register"]

SWEEP_EVERY = 30.0


def register(declare: TaskDecorator, workflows: Workflows,
             beat_schedule: dict[str, Any] | None, *, sweep_queue: str) -> None:
    """Declare the two tasks with ``declare`` (``tw.task``) and add the sweep to
    ``beat_schedule`` (the app's, when it has one) unless an entry runs it already."""

    @declare(name=STEP_TASK, bind=True)
    def _workflow_step(self: Any, run_id: str, step: str, token: str) -> dict[str, Any]:
        return workflows.engine.execute(self, run_id, step, token)

    # the wrapper has no chain of its own: the engine runs the step task's chain around
    # the step (workflows/step_runtime.py), and a worker start must not adopt it either
    _workflow_step.runtime = None
    _workflow_step.taskworks = False

    @declare(name=SWEEP_TASK, queue=sweep_queue)
    def _workflow_sweep() -> dict[str, int]:
        return workflows.recover()

    if beat_schedule is not None and not any(
            e.get("task") == SWEEP_TASK for e in beat_schedule.values()):
        beat_schedule["taskworks-workflows-sweep"] = {
            "task": SWEEP_TASK, "schedule": timedelta(seconds=SWEEP_EVERY),
            "args": (), "kwargs": {}, "options": {},
        }
