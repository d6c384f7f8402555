"""``taskworks workflow``: register definitions, run, watch, cancel and retry runs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from taskworks.cli import loader
from taskworks.cli.common import AppOption, json_arg, out, settings, when
from taskworks.workflows.api import RunStatus, Workflows

workflow_cli = typer.Typer(no_args_is_help=True, help="Durable DAG workflows.")

STYLE = {"SUCCEEDED": "green", "FAILED": "red", "RUNNING": "cyan", "QUEUED": "blue",
         "CANCELLED": "magenta", "SKIPPED": "dim", "PENDING": "white"}
WatchOpt = Annotated[bool, typer.Option("--watch", help="show every step's state live "
                                        "until the run ends")]


def _workflows(app: str | None) -> Workflows:
    settings()
    return loader.load(app).workflows


def _state(state: str) -> str:
    return f"[{STYLE.get(state, 'white')}]{state}[/]"


def status_table(status: RunStatus) -> Table:
    title = (f"run {status.id} · {status.workflow} v{status.version} · "
             f"{_state(status.state.value)}")
    if status.failed_step or status.error:
        title += f" · {status.failed_step or ''} {status.error or ''}".rstrip()
    table = Table(title=title, title_justify="left")
    for column in ("step", "state", "attempt", "tries", "started", "finished", "detail"):
        table.add_column(column)
    for step in status.steps.values():
        detail = step.error or (f"skipped: {step.skip_reason}" if step.skip_reason else "")
        if not detail and step.result is not None:
            detail = json.dumps(step.result, default=str)[:60]
        table.add_row(step.name, _state(step.state), str(step.attempt), str(step.tries),
                      when(step.started_at), when(step.finished_at), detail)
    return table


def _watch(workflows: Workflows, run_id: str, interval: float = 0.3) -> RunStatus:
    status = workflows.status(run_id)
    with Live(status_table(status), console=out, refresh_per_second=8) as live:
        while not status.done:
            time.sleep(interval)
            status = workflows.status(run_id)
            live.update(status_table(status))
    return status


def _end(status: RunStatus) -> None:
    """Exit 0 when the watched run succeeded, 1 when it failed or was cancelled."""
    if status.state.value != "SUCCEEDED":
        raise typer.Exit(1)


@workflow_cli.command("register")
def register(file: Annotated[Path, typer.Argument(help="a .yaml, .yml or .json definition")],
             app: AppOption = None) -> None:
    """Validate a definition file (every problem at once) and store it."""
    wf = _workflows(app).register(file)
    out.print(f"registered {wf.name} v{wf.version} ({len(wf.steps)} steps)")


@workflow_cli.command("run")
def run(name: str,
        input: Annotated[str, typer.Option("--input", help="the run input, JSON")] = "{}",
        version: Annotated[int | None, typer.Option(help="default: the newest")] = None,
        watch: WatchOpt = False, app: AppOption = None) -> None:
    """Start a run; prints its id (with --watch, its steps live until it ends)."""
    workflows = _workflows(app)
    value: Any = json_arg("--input", input, object)
    run_handle = workflows.start(name, value, version=version)
    out.print(run_handle.id)
    if watch:
        _end(_watch(workflows, run_handle.id))


@workflow_cli.command("status")
def status(run_id: str, as_json: Annotated[bool, typer.Option("--json")] = False,
           app: AppOption = None) -> None:
    """A run and each of its steps."""
    current = _workflows(app).status(run_id)
    if as_json:
        out.print_json(json.dumps({
            "id": current.id, "workflow": current.workflow, "version": current.version,
            "state": current.state.value, "error": current.error,
            "failed_step": current.failed_step, "resumes": current.resumes,
            "steps": {n: {"state": s.state, "attempt": s.attempt, "tries": s.tries,
                          "skip_reason": s.skip_reason, "error": s.error, "result": s.result}
                      for n, s in current.steps.items()},
        }, default=str))
        return
    out.print(status_table(current))


@workflow_cli.command("cancel")
def cancel(run_id: str,
           terminate: Annotated[bool, typer.Option(
               help="also kill running steps (prefork workers)")] = False,
           app: AppOption = None) -> None:
    """Cancel a run: pending steps CANCELLED, running ones revoked. Idempotent."""
    current = _workflows(app).run(run_id).cancel(terminate=terminate)
    out.print(f"run {run_id} {current.state.value}")


@workflow_cli.command("retry")
def retry(run_id: str, watch: WatchOpt = False, app: AppOption = None) -> None:
    """Run again the failed, cancelled and failure-skipped steps (not the succeeded)."""
    workflows = _workflows(app)
    workflows.run(run_id).retry()
    out.print(f"run {run_id} resumed")
    if watch:
        _end(_watch(workflows, run_id))


@workflow_cli.command("list")
def list_(workflow: Annotated[str | None, typer.Option(help="runs of this workflow only")]
          = None, limit: Annotated[int, typer.Option(min=1)] = 20,
          app: AppOption = None) -> None:
    """Registered definitions and the latest runs."""
    workflows = _workflows(app)
    definitions = Table(title="workflows", title_justify="left")
    for column in ("name", "version", "registered"):
        definitions.add_column(column)
    for name, version, created in workflows.definitions():
        if workflow is None or name == workflow:
            definitions.add_row(name, str(version), when(created))
    out.print(definitions)
    runs = Table(title="runs", title_justify="left")
    for column in ("run id", "workflow", "state", "started", "finished", "failed step"):
        runs.add_column(column)
    for row in workflows.runs(workflow, limit):
        runs.add_row(row.id, f"{row.workflow} v{row.version}", _state(row.state),
                     when(row.created_at), when(row.finished_at), row.failed_step or "")
    out.print(runs)


@workflow_cli.command("recover")
def recover(app: AppOption = None) -> None:
    """Run the recovery sweep now (beat runs it every 30 s)."""
    found = _workflows(app).recover()
    out.print(", ".join(f"{k} {v}" for k, v in found.items()))
