"""``taskworks journal``: every attempt of every task, from the store."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from taskworks.cli import loader
from taskworks.cli.common import AppOption, as_flags, out, row_dict, settings, when
from taskworks.errors import InvalidInput
from taskworks.runtime import journal as journal_store

journal_cli = typer.Typer(help="The outcome journal.", invoke_without_command=True)

#: the library's parameter names as this command spells them
_FLAGS = {"task": "--task", "state": "--state", "since": "--since", "severity": "--severity",
          "limit": "--limit"}


@journal_cli.callback()
def journal_list(
    ctx: typer.Context,
    task: Annotated[str | None, typer.Option(help="task name")] = None,
    state: Annotated[str | None, typer.Option(
        help="success, failure, retry, deferred or revoked")] = None,
    since: Annotated[str | None, typer.Option(help="e.g. 30m, 1h, 7d")] = None,
    severity: Annotated[str | None, typer.Option(help="low, medium, high or critical")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    app: AppOption = None,
) -> None:
    """List journal entries, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    settings()
    store = loader.load(app).store
    with as_flags(_FLAGS):
        rows = journal_store.list_entries(store, task=task, state=state, severity=severity,
                                          since=since, limit=limit)
    if as_json:
        for row in rows:
            out.print_json(json.dumps(row_dict(row), default=str))
        return
    table = Table(title=f"journal ({len(rows)} entries)")
    for column in ("finished", "task", "task id", "state", "attempt", "severity", "ms", "error"):
        table.add_column(column)
    for row in rows:
        table.add_row(when(row.finished_at), row.name, row.task_id, row.state, str(row.attempt),
                      row.severity or "-", f"{row.duration_ms or 0:.1f}",
                      f"{row.exc_type}: {row.exc_message}" if row.exc_type else "")
    out.print(table)


@journal_cli.command("show")
def journal_show(task_id: str, app: AppOption = None) -> None:
    """Every attempt of one task, with arguments (redacted) and tracebacks."""
    settings()
    rows = journal_store.attempts(loader.load(app).store, task_id)
    if not rows:
        raise InvalidInput("TASK_ID", task_id, "the id of a journaled task")
    for row in rows:
        out.print(f"[bold]attempt {row.attempt}[/bold]: {row.state} on {row.hostname} "
                  f"pid {row.pid}, {when(row.started_at)} -> {when(row.finished_at)} "
                  f"({row.duration_ms or 0:.1f} ms)")
        out.print(f"  task {row.name} queue {row.queue}", markup=False)
        out.print(f"  args {json.dumps(row.args)} kwargs {json.dumps(row.kwargs)}", markup=False)
        if row.result is not None:
            out.print(f"  result {row.result}", markup=False)
        if row.exc_type:
            out.print(f"  error {row.exc_type}: {row.exc_message} (severity {row.severity})",
                      markup=False)
            out.print(row.traceback or "", markup=False)
