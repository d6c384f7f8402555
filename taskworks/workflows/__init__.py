"""Durable DAG workflows: definitions, validation, the event-driven engine, the API."""

from taskworks.errors import WaitTimeout
from taskworks.workflows.api import Run, RunStatus, StepStatus, Workflows
from taskworks.workflows.model import (
    Condition,
    OnFailure,
    RunState,
    SkipReason,
    Step,
    StepState,
    Workflow,
    load_file,
    workflow_from_dict,
)

__all__ = [
    "Condition", "OnFailure", "Run", "RunState", "RunStatus", "SkipReason", "Step",
    "StepState", "StepStatus", "WaitTimeout", "Workflow", "Workflows", "load_file",
    "workflow_from_dict",
]
