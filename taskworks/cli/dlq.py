"""``taskworks dlq``: the dead-letter store."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from taskworks.cli import loader
from taskworks.cli.common import AppOption, as_flags, out, settings, when
from taskworks.redaction import Redactor
from taskworks.runtime.dlq import DeadLetterFilter, shown

dlq_cli = typer.Typer(no_args_is_help=True, help="The dead-letter store.")

TaskOpt = Annotated[str | None, typer.Option("--task", help="task name")]
ExcOpt = Annotated[str | None, typer.Option("--exception", help="exception type name")]
SinceOpt = Annotated[str | None, typer.Option(help="failed within, e.g. 1h, 7d")]
UntilOpt = Annotated[str | None, typer.Option(help="failed before (ISO 8601, UTC)")]

#: the library's parameter names as these commands spell them
_FLAGS = {"task": "--task", "exc_type": "--exception", "since": "--since",
          "until": "--until", "ids": "LETTER_IDS", "all": "--all", "id": "LETTER_ID"}


def _filter(task: str | None, exception: str | None, since: str | None,
            until: str | None) -> DeadLetterFilter:
    with as_flags(_FLAGS):
        return DeadLetterFilter.parse(task=task, exc_type=exception, since=since, until=until)


@dlq_cli.command("list")
def dlq_list(task: TaskOpt = None, exception: ExcOpt = None, since: SinceOpt = None,
             until: UntilOpt = None, limit: Annotated[int, typer.Option(min=1)] = 50,
             app: AppOption = None) -> None:
    """Dead letters, newest first."""
    settings()
    tw = loader.load(app)
    rows = tw.dead_letters.find(_filter(task, exception, since, until), limit)
    table = Table(title=f"dead letters ({len(rows)})")
    for column in ("id", "failed", "task", "task id", "reason", "attempts", "error", "replays"):
        table.add_column(column)
    for row in rows:
        table.add_row(str(row.id), when(row.failed_at), row.name, row.task_id, row.reason,
                      str(row.attempts), f"{row.exc_type}: {row.exc_message}",
                      str(row.replay_count))
    out.print(table)


@dlq_cli.command("show")
def dlq_show(letter_id: int, app: AppOption = None) -> None:
    """One dead letter in full, secret-looking arguments hidden (journal.redact_keys)."""
    settings()
    tw = loader.load(app)
    with as_flags(_FLAGS):
        letter = tw.dead_letters.get(letter_id)
    out.print_json(json.dumps(shown(letter, Redactor(tw.settings.journal.redact_keys)),
                              default=str))


@dlq_cli.command("replay")
def dlq_replay(letter_ids: Annotated[list[int] | None, typer.Argument()] = None,
               all_matching: Annotated[bool, typer.Option(
                   "--all", help="replay every letter matching the filters")] = False,
               task: TaskOpt = None, exception: ExcOpt = None, since: SinceOpt = None,
               until: UntilOpt = None, app: AppOption = None) -> None:
    """Submit dead letters again (by id, or --all matching the filters)."""
    settings()
    tw = loader.load(app)
    matching = _filter(task, exception, since, until)
    with as_flags(_FLAGS):
        replayed = tw.dead_letters.replay_selection(letter_ids, all=all_matching,
                                                    matching=matching)
    for letter, new_id in replayed.items():
        out.print(f"dead letter {letter} replayed as task {new_id}")
    out.print(f"{len(replayed)} replayed")


@dlq_cli.command("purge")
def dlq_purge(task: TaskOpt = None, exception: ExcOpt = None, since: SinceOpt = None,
              until: UntilOpt = None,
              yes: Annotated[bool, typer.Option("--yes", help="no confirmation")] = False,
              app: AppOption = None) -> None:
    """Delete dead letters matching the filters (all of them without filters)."""
    settings()
    tw = loader.load(app)
    flt = _filter(task, exception, since, until)
    if not yes:
        typer.confirm(f"delete {tw.dead_letters.count(flt)} dead letters?", abort=True)
    # without filters this command means every letter: the confirmation asked for it
    out.print(f"{tw.dead_letters.purge(flt, all=True)} deleted")
