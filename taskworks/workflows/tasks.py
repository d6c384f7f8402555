"""The workflow built-in tasks: the step wrapper and the periodic recovery sweep."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from taskworks.workflows.engine import STEP_TASK, SWEEP_TASK

if TYPE_CHECKING:
    from taskworks.app import Taskworks

SWEEP_EVERY = 30.0


def register(tw: Taskworks) -> None:
    @tw.task(name=STEP_TASK, bind=True)
    def _workflow_step(self: Any, run_id: str, step: str, token: str) -> dict[str, Any]:
        return tw.workflows.engine.execute(self, run_id, step, token)

    # the wrapper has no chain of its own: the engine runs the step task's chain around
    # the step (workflows/step_runtime.py), and a worker start must not adopt it either
    _workflow_step.runtime = None
    _workflow_step.taskworks = False

    sweep_queue = "scheduled" if "scheduled" in tw.settings.queues else tw.settings.default_queue

    @tw.task(name=SWEEP_TASK, queue=sweep_queue)
    def _workflow_sweep() -> dict[str, int]:
        return tw.workflows.recover()

    schedule = tw.app.conf.beat_schedule
    if schedule is not None and not any(e.get("task") == SWEEP_TASK for e in schedule.values()):
        schedule["taskworks-workflows-sweep"] = {
            "task": SWEEP_TASK, "schedule": timedelta(seconds=SWEEP_EVERY),
            "args": (), "kwargs": {}, "options": {},
        }
