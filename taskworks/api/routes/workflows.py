"""/api/workflows: register (JSON or YAML), list, start a run; /api/runs: status with its
steps, cancel, retry."""

from __future__ import annotations

import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Path, Query, Request, status
from starlette.concurrency import run_in_threadpool

from taskworks.api.context import ApiContext, Ctx
from taskworks.api.errors import NotFound
from taskworks.api.models import (
    ID_PATTERN,
    RunCancel,
    RunDetail,
    RunItem,
    RunStart,
    StepItem,
    WorkflowDefinition,
    WorkflowSummary,
)
from taskworks.errors import InvalidInput
from taskworks.submission import check_submittable
from taskworks.workflows import model
from taskworks.workflows.model import Workflow, load_yaml, workflow_from_dict

router = APIRouter(tags=["workflows"])

#: a definition body larger than this (the library's cap for definition files) is a 413
#: while it streams in, before it is read whole or parsed (taskworks/api/limits.py)
MAX_DEFINITION_BYTES = model.MAX_DEFINITION_BYTES
#: the store's column sizes: refused here rather than failing in PostgreSQL
MAX_NAME = 255
MAX_INT = 2**31 - 1
#: ten years: any longer timeout or delay is a mistake, and datetimes overflow further on
MAX_SECONDS = 10 * 365 * 86_400.0
MAX_RETRIES = 1000

WorkflowName = Annotated[str, Path(min_length=1, max_length=MAX_NAME)]
RunId = Annotated[str, Path(pattern=ID_PATTERN, description="the run id")]

DEFINITION_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "required": ["name", "steps"],
                                    "properties": {"name": {"type": "string"},
                                                   "version": {"type": "integer"},
                                                   "steps": {"type": "array",
                                                             "items": {"type": "object"}}}}},
    "application/yaml": {"schema": {"type": "string"}},
}}}


def _parse(raw: bytes, content_type: str) -> Any:
    try:
        text = raw.decode()
        return load_yaml(text) if "yaml" in content_type else json.loads(text)
    # RecursionError: deep nesting, within the size cap, exhausts the parsers' recursion
    except (UnicodeDecodeError, ValueError, RecursionError, yaml.YAMLError) as exc:
        kind = "YAML" if "yaml" in content_type else "JSON"
        raise InvalidInput("body", raw[:200].decode("utf-8", "replace"),
                           f"a workflow definition in {kind} ({exc})") from None


def _check_sizes(wf: Workflow) -> None:
    """Bounds the definition model leaves open, so that a huge number is a 422 here
    rather than an overflow when a run starts, a deadline is computed or a retry waits."""
    if len(wf.name) > MAX_NAME:
        raise InvalidInput("name", wf.name[:40] + "...", f"at most {MAX_NAME} characters")
    if not 1 <= wf.version <= MAX_INT:
        raise InvalidInput("version", wf.version, f"an integer from 1 to {MAX_INT}")
    seconds = f"seconds, at most {MAX_SECONDS:.0f}"
    if wf.timeout is not None and not 0 < wf.timeout <= MAX_SECONDS:
        raise InvalidInput("timeout", wf.timeout, seconds)
    for i, step in enumerate(wf.steps):
        where = f"steps[{i}] ({step.name})"
        for key in ("soft_timeout", "timeout"):
            value = getattr(step, key)
            if value is not None and value > MAX_SECONDS:
                raise InvalidInput(f"{where}.{key}", value, seconds)
        r = step.retries
        if r is None:
            continue
        if r.max_retries > MAX_RETRIES:
            raise InvalidInput(f"{where}.retries.max_retries", r.max_retries,
                               f"at most {MAX_RETRIES}")
        for key in ("base_delay", "max_delay"):
            if getattr(r, key) > MAX_SECONDS:
                raise InvalidInput(f"{where}.retries.{key}", getattr(r, key), seconds)
        try:  # the retry delay is base_delay * backoff_factor ** retries_done
            float(r.backoff_factor) ** r.max_retries
        except OverflowError:
            raise InvalidInput(f"{where}.retries.backoff_factor", r.backoff_factor,
                               f"a factor whose power {r.max_retries} (max_retries) is a "
                               "finite number") from None


def definition_of(ctx: ApiContext, name: str, version: int | None = None) -> Workflow:
    runs = ctx.tw.workflows.engine.runs
    found = version if version is not None else runs.latest_version(name)
    if found is None:
        raise NotFound("workflow", name)
    try:
        return ctx.tw.workflows.engine.definition(name, found)
    except InvalidInput:
        raise NotFound("workflow version", f"{name} v{found}") from None


def _definition(wf: Workflow) -> WorkflowDefinition:
    return WorkflowDefinition(name=wf.name, version=wf.version, description=wf.description,
                              steps=[s.to_dict() for s in wf.steps])


@router.get("/api/workflows", response_model=list[WorkflowSummary])
def workflows(ctx: Ctx) -> list[WorkflowSummary]:
    """Every registered definition version."""
    return [WorkflowSummary(name=n, version=v, created_at=at)
            for n, v, at in ctx.tw.workflows.definitions()]


@router.post("/api/workflows", status_code=status.HTTP_201_CREATED,
             response_model=WorkflowDefinition, openapi_extra=DEFINITION_BODY)
async def register(request: Request, ctx: Ctx) -> WorkflowDefinition:
    """Register a definition (JSON, or YAML with ``Content-Type: application/yaml``).
    Every problem is reported at once; the same version again is a no-op."""
    data = _parse(await request.body(), request.headers.get("content-type", ""))
    wf = workflow_from_dict(data)
    _check_sizes(wf)
    for i, step in enumerate(wf.steps):  # a step runs its task: the same rule as /api/tasks
        check_submittable(ctx.settings, step.task, field=f"steps[{i}] ({step.name}).task")
    # the store is synchronous: off the event loop
    return _definition(await run_in_threadpool(ctx.tw.workflows.register, wf))


@router.get("/api/workflows/{name:path}/runs", response_model=list[RunItem])
def workflow_runs(name: WorkflowName, ctx: Ctx,
                  limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[RunItem]:
    definition_of(ctx, name)
    return runs(ctx, workflow=name, limit=limit)


@router.post("/api/workflows/{name:path}/runs", status_code=status.HTTP_201_CREATED,
             response_model=RunDetail)
def start(name: WorkflowName, ctx: Ctx, body: RunStart | None = None) -> RunDetail:
    """Start a run (the newest version unless ``version`` is given)."""
    body = body or RunStart()
    definition_of(ctx, name, body.version)
    run = ctx.tw.workflows.start(name, body.input, version=body.version)
    return run_detail(run.id, ctx)


@router.get("/api/workflows/{name:path}", response_model=WorkflowDefinition)
def workflow(name: WorkflowName, ctx: Ctx,
             version: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None
             ) -> WorkflowDefinition:
    return _definition(definition_of(ctx, name, version))


@router.get("/api/runs", response_model=list[RunItem])
def runs(ctx: Ctx, workflow: Annotated[str | None, Query(max_length=MAX_NAME)] = None,
         limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[RunItem]:
    """Runs, newest first."""
    return [RunItem.model_validate(r, from_attributes=True)
            for r in ctx.tw.workflows.runs(workflow, limit)]


@router.get("/api/runs/{run_id}", response_model=RunDetail)
def run_detail(run_id: RunId, ctx: Ctx) -> RunDetail:
    """The run and each step: state, result or error, and its dependencies (the DAG)."""
    try:
        st = ctx.tw.workflows.status(run_id)
    except InvalidInput:
        raise NotFound("run", run_id) from None
    try:
        steps = {s.name: s for s in ctx.tw.workflows.engine.definition(st.workflow,
                                                                       st.version).steps}
    except InvalidInput:
        steps = {}
    return RunDetail(
        id=st.id, workflow=st.workflow, version=st.version, state=st.state.value,
        error=st.error, failed_step=st.failed_step, resumes=st.resumes,
        created_at=st.created_at, finished_at=st.finished_at, input=st.input,
        steps=[StepItem(name=s.name, task=steps[s.name].task if s.name in steps else None,
                        depends_on=list(steps[s.name].depends_on) if s.name in steps else [],
                        state=s.state, attempt=s.attempt, tries=s.tries, task_id=s.task_id,
                        skip_reason=s.skip_reason, started_at=s.started_at,
                        finished_at=s.finished_at, result=s.result, error=s.error)
               for s in st.steps.values()],
    )


@router.post("/api/runs/{run_id}/cancel", response_model=RunDetail)
def cancel(run_id: RunId, ctx: Ctx, body: RunCancel | None = None) -> RunDetail:
    """Cancel pending steps and revoke running ones; a finished run is left as it is."""
    run_detail(run_id, ctx)
    ctx.tw.workflows.run(run_id).cancel(terminate=body.terminate if body else False)
    return run_detail(run_id, ctx)


@router.post("/api/runs/{run_id}/retry", response_model=RunDetail)
def retry(run_id: RunId, ctx: Ctx) -> RunDetail:
    """Run again what failed, was cancelled or skipped because of a failure."""
    run_detail(run_id, ctx)
    ctx.tw.workflows.run(run_id).retry()
    return run_detail(run_id, ctx)
