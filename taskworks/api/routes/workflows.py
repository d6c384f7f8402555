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
    WorkflowSummary,
)
from taskworks.errors import InvalidInput
from taskworks.submission import check_submittable
from taskworks.workflows.model import (
    MAX_DEFINITION_BYTES,
    Workflow,
    load_yaml,
    workflow_from_dict,
)
from taskworks.workflows.validate import MAX_NAME, MAX_VERSION

__all__ = ["MAX_DEFINITION_BYTES", "router"]

router = APIRouter(tags=["workflows"])

WorkflowName = Annotated[str, Path(min_length=1, max_length=MAX_NAME)]
RunId = Annotated[str, Path(pattern=ID_PATTERN, description="the run id")]

#: the body is read raw (JSON, or YAML), so its schema is declared here: the domain
#: model's own (the Workflow component, there as the responses' model)
DEFINITION_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/Workflow"}},
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


def definition_of(ctx: ApiContext, name: str, version: int | None = None) -> Workflow:
    """A registered version (the newest unless given), or a 404."""
    try:
        return ctx.tw.workflows.definition(name, version)
    except InvalidInput as exc:
        raise NotFound("workflow", exc.value) from None


@router.get("/api/workflows", response_model=list[WorkflowSummary])
def workflows(ctx: Ctx) -> list[WorkflowSummary]:
    """Every registered definition version."""
    return [WorkflowSummary(name=n, version=v, created_at=at)
            for n, v, at in ctx.tw.workflows.definitions()]


@router.post("/api/workflows", status_code=status.HTTP_201_CREATED,
             response_model=Workflow, openapi_extra=DEFINITION_BODY)
async def register(request: Request, ctx: Ctx) -> Workflow:
    """Register a definition (JSON, or YAML with ``Content-Type: application/yaml``).
    Every problem is reported at once; the same version again is a no-op."""
    data = _parse(await request.body(), request.headers.get("content-type", ""))
    wf = workflow_from_dict(data)
    for i, step in enumerate(wf.steps):  # a step runs its task: the same rule as /api/tasks
        check_submittable(ctx.settings, step.task, field=f"steps[{i}] ({step.name}).task")
    # the store is synchronous: off the event loop
    return await run_in_threadpool(ctx.tw.workflows.register, wf)


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


@router.get("/api/workflows/{name:path}", response_model=Workflow)
def workflow(name: WorkflowName, ctx: Ctx,
             version: Annotated[int | None, Query(ge=1, le=MAX_VERSION)] = None) -> Workflow:
    return definition_of(ctx, name, version)


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
    return RunDetail(
        id=st.id, workflow=st.workflow, version=st.version, state=st.state.value,
        error=st.error, failed_step=st.failed_step, resumes=st.resumes,
        created_at=st.created_at, finished_at=st.finished_at, input=st.input,
        steps=[StepItem.model_validate(s, from_attributes=True) for s in st.steps.values()],
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
