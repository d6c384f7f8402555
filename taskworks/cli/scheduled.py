"""``taskworks scheduled``: delayed tasks waiting in the durable schedule until due."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from taskworks.cli import loader
from taskworks.cli.common import AppOption, as_flags, out, settings, when

scheduled_cli = typer.Typer(no_args_is_help=True, help="Delayed tasks (countdown, eta, retry "
                            "backoff) waiting until they are due.")

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]

#: the library's parameter names as these commands spell them
_FLAGS = {"queue": "--queue", "limit": "--limit", "offset": "--offset", "task_id": "TASK_ID"}


def _in(moment: datetime) -> str:
    seconds = (moment - datetime.now(UTC)).total_seconds()
    return f"{when(moment)} ({'in ' if seconds >= 0 else ''}{abs(seconds):.0f}s" \
           f"{'' if seconds >= 0 else ' ago'})"


@scheduled_cli.command("list")
def scheduled_list(
    queue: Annotated[str | None, typer.Option(help="only tasks bound for this queue")] = None,
    limit: Annotated[int, typer.Option(help="at most this many (1-1000)")] = 100,
    offset: Annotated[int, typer.Option(help="skip this many first")] = 0,
    as_json: JsonOpt = False, app: AppOption = None,
) -> None:
    """Scheduled tasks, the earliest due first, with the counts by queue."""
    settings()
    tw = loader.load(app)
    with as_flags(_FLAGS):
        rows = tw.scheduled.list(queue=queue, limit=limit, offset=offset)
    if as_json:
        out.print_json(json.dumps([row.model_dump(mode="json") for row in rows]))
        return
    summary = tw.scheduled.summary()
    table = Table(title=f"scheduled tasks ({len(rows)} of {summary.total})")
    for column in ("due (UTC)", "task", "task id", "queue", "priority", "retries"):
        table.add_column(column)
    for row in rows:
        table.add_row(_in(row.due), row.name, row.id, row.queue, str(row.priority),
                      str(row.retries))
    out.print(table)
    counts = ", ".join(f"{q} {n}" for q, n in summary.by_queue.items()) or "none"
    out.print(f"by queue: {counts}; mover lag {summary.mover_lag:.1f}s", markup=False)


@scheduled_cli.command("show")
def scheduled_show(task_id: str, as_json: JsonOpt = False, app: AppOption = None) -> None:
    """One scheduled task with its arguments (secret-looking values hidden)."""
    settings()
    tw = loader.load(app)
    with as_flags(_FLAGS):
        task = tw.scheduled.show(task_id)
    shown = task.model_dump(mode="json")
    if as_json:
        out.print_json(json.dumps(shown))
        return
    for key, value in shown.items():
        text = _in(task.due) if key == "due" else json.dumps(value) \
            if key in ("args", "kwargs") else value
        out.print(f"{key}: {'-' if value is None else text}", markup=False, highlight=False)


@scheduled_cli.command("cancel")
def scheduled_cancel(task_id: str, app: AppOption = None) -> None:
    """Cancel a task before it is due: it never runs, its result becomes REVOKED."""
    settings()
    tw = loader.load(app)
    with as_flags(_FLAGS):
        task = tw.scheduled.cancel(task_id)
    out.print(f"cancelled {task.name} {task.id} (was due {when(task.due)} UTC, queue "
              f"{task.queue})", markup=False, highlight=False)
