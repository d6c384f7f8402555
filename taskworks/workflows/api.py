"""``tw.workflows``: register definitions, start runs, and the Run handle clients hold.

``Workflows`` builds the workflow stores on the SQL store it is given and the engine
from the parts the composition root (taskworks/app.py) passes; it never sees the
``Taskworks`` facade."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import Celery

from taskworks.broker.transport import keeps_delayed
from taskworks.errors import InvalidInput, TaskworksError, WaitTimeout
from taskworks.runtime.middleware import Runtime
from taskworks.runtime.retry import RetryPolicies
from taskworks.store.engine import Store
from taskworks.store.tables import WorkflowRun
from taskworks.workflows.cache import json_size
from taskworks.workflows.conditions import Predicates
from taskworks.workflows.definitions import DefinitionStore
from taskworks.workflows.engine import PublishMany, WorkflowEngine
from taskworks.workflows.model import RunState, Workflow, load_file
from taskworks.workflows.queries import RunQueries
from taskworks.workflows.recovery import RunRecovery
from taskworks.workflows.runs import RunStore
from taskworks.workflows.validate import check_bounds, validate

__all__ = ["Run", "RunStatus", "StepStatus", "Workflows"]


@dataclass(frozen=True)
class StepStatus:
    name: str
    state: str
    attempt: int
    tries: int
    task_id: str | None
    skip_reason: str | None
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    error: str | None
    #: from the run's definition (None and () when it can no longer be read)
    task: str | None = None
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunStatus:
    id: str
    workflow: str
    version: int
    state: RunState
    error: str | None
    failed_step: str | None
    resumes: int
    created_at: datetime
    finished_at: datetime | None
    input: Any
    #: in definition order
    steps: dict[str, StepStatus]

    @property
    def done(self) -> bool:
        return self.state.terminal

    def results(self) -> dict[str, Any]:
        return {n: s.result for n, s in self.steps.items() if s.state == "SUCCEEDED"}


class Run:
    """A handle on one run: cheap to create, reads the store on every call."""

    def __init__(self, workflows: Workflows, run_id: str) -> None:
        self.workflows = workflows
        self.id = run_id

    def __repr__(self) -> str:
        return f"<Run {self.id}>"

    def status(self) -> RunStatus:
        return self.workflows.status(self.id)

    def wait(self, timeout: float | None = None, interval: float = 0.1) -> RunStatus:
        """Poll until the run ends. For clients only: inside a task it would hold a
        worker hostage, so it refuses."""
        if self.workflows.app.current_worker_task is not None:
            raise TaskworksError("Run.wait() inside a task would block a worker; "
                                 "make the waiting code a step of the workflow instead")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status()
            if status.done:
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise WaitTimeout(f"run {self.id} still {status.state.value} after {timeout}s")
            time.sleep(interval)

    def cancel(self, terminate: bool = False) -> RunStatus:
        """Cancel pending steps and revoke running ones (``terminate`` also kills them in
        prefork workers). Idempotent; a run already over is left as it is."""
        engine = self.workflows.engine
        engine.act(engine.runs.cancel(self.id), terminate=terminate)
        return self.status()

    def retry(self) -> Run:
        """Run again what failed, was cancelled or was skipped because of a failure."""
        engine = self.workflows.engine
        row = self.workflows.queries.run_row(self.id)
        wf = engine.definition(row.workflow, row.version)
        engine.act(engine.runs.resume(wf, self.id))
        return self


class Workflows:
    def __init__(self, store: Store, app: Celery, *, runtime: Runtime,
                 retry_policies: RetryPolicies, route_of: Callable[[str], str],
                 queue_names: Callable[[], list[str]], publish_many: PublishMany,
                 visibility_timeout: float, default_time_limit: float) -> None:
        self.app = app
        self.queue_names = queue_names
        #: the broker's: each step's time limits and retry delays must stay below it
        self.visibility_timeout = visibility_timeout
        self.queries = RunQueries(store)
        self.engine = WorkflowEngine(
            RunStore(store), DefinitionStore(store), RunRecovery(store), app=app,
            runtime=runtime, retry_policies=retry_policies, route_of=route_of,
            publish_many=publish_many, default_time_limit=default_time_limit)

    @property
    def predicates(self) -> Predicates:
        """``tw.workflows.predicates.register("name", fn)``; fn gets the step's input."""
        return self.engine.predicates

    def validate(self, wf: Workflow) -> None:
        """Refuse a definition past the store's bounds (InvalidInput at the first), then
        one with problems (WorkflowInvalid listing every one)."""
        check_bounds(wf)
        validate(wf, self.app.tasks.keys(), self.queue_names(), self.predicates,
                 visibility_timeout=self.visibility_timeout,
                 delays=not keeps_delayed(self.app.conf.broker_transport))

    def register(self, wf: Workflow | str | Path) -> Workflow:
        """Validate (every problem at once) and store a definition version. A path is
        loaded as YAML or JSON. Registering the same version again is a no-op."""
        if not isinstance(wf, Workflow):
            wf = load_file(wf)
        self.validate(wf)
        self.engine.definitions.save(wf)
        self.engine.registered.put((wf.name, wf.version), wf, json_size(wf.to_dict()))
        return wf

    def start(self, name: str, input: Any = None, *, version: int | None = None,
              run_id: str | None = None) -> Run:
        """Start a run of a registered workflow (its newest version unless given)."""
        wf = self.definition(name, version)
        try:
            json.dumps(input)
        except (TypeError, ValueError):
            raise InvalidInput("input", input, "a JSON-serialisable value") from None
        new_id, dispatch = self.engine.runs.create_run(wf, input, run_id)
        self.engine.publish(dispatch)
        return Run(self, new_id)

    def latest_version(self, name: str) -> int | None:
        """The newest registered version of a workflow, None when it has none."""
        return self.engine.definitions.latest_version(name)

    def definition(self, name: str, version: int | None = None) -> Workflow:
        """A registered version (the newest unless given); InvalidInput when unknown."""
        found = version if version is not None else self.latest_version(name)
        if found is None:
            raise InvalidInput("workflow", name, "the name of a registered workflow")
        return self.engine.definition(name, found)

    def run(self, run_id: str) -> Run:
        self.queries.run_row(run_id)  # raises InvalidInput when unknown
        return Run(self, run_id)

    def status(self, run_id: str) -> RunStatus:
        row = self.queries.run_row(run_id)
        rows = {r.name: r for r in self.queries.step_rows(run_id)}
        try:
            defined = {s.name: s for s in self.engine.definition(row.workflow,
                                                                 row.version).steps}
        except InvalidInput:
            defined = {}
        order = list(defined) or sorted(rows)
        steps = {
            name: StepStatus(name=name, state=r.state, attempt=r.attempt, tries=r.tries,
                             task_id=r.task_id, skip_reason=r.skip_reason,
                             started_at=r.started_at, finished_at=r.finished_at,
                             result=r.result, error=r.error,
                             task=step.task if (step := defined.get(name)) else None,
                             depends_on=step.depends_on if step else ())
            for name in order if (r := rows.get(name)) is not None
        }
        return RunStatus(id=row.id, workflow=row.workflow, version=row.version,
                         state=RunState(row.state), error=row.error,
                         failed_step=row.failed_step, resumes=row.resumes,
                         created_at=row.created_at, finished_at=row.finished_at,
                         input=row.input, steps=steps)

    def runs(self, workflow: str | None = None, limit: int = 50) -> list[WorkflowRun]:
        """Runs, newest first (of one workflow when named)."""
        return self.queries.runs(workflow, limit)

    def definitions(self) -> list[tuple[str, int, datetime]]:
        """Every registered (name, version, registered at)."""
        return self.engine.definitions.versions()

    def resume_for_task(self, task_id: str) -> str | None:
        """Resume the run whose step ran as ``task_id`` (its dead letter is replayed);
        the run's id, or None when no step ran under that id."""
        run_id = self.queries.run_of_task(task_id)
        if run_id is not None:
            self.run(run_id).retry()
        return run_id

    def recover(self) -> dict[str, int]:
        """The recovery sweep, now (beat runs it every 30 s)."""
        return self.engine.sweep()
