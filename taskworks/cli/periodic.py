"""``taskworks periodic``: periodic entries with their state; pause and resume one."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import redis
import typer
from rich.table import Table

from taskworks.broker.urls import redis_client
from taskworks.cli import loader
from taskworks.cli.common import AppOption, as_flags, out, settings
from taskworks.scheduling import periodic
from taskworks.scheduling.cron import zone_of

if TYPE_CHECKING:
    from taskworks.app import Taskworks

periodic_cli = typer.Typer(no_args_is_help=True, help="Periodic entries: list, pause, resume.")

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
#: the library's parameter names as these commands spell them
_FLAGS = {"name": "NAME"}


def _client(tw: Taskworks) -> redis.Redis:
    return redis_client(tw.settings.effective_broker_url, socket_timeout=5)


def _at(moment: float | None, zone: str) -> str:
    """A time in the entry's own zone, with the zone's abbreviation (CET, CEST)."""
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, zone_of(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def _line(entry: periodic.EntryStatus) -> str:
    state = "paused" if entry.paused else f"next {_at(entry.next_fire, entry.timezone)}"
    return f"periodic entry {entry.name}: {state}"


@periodic_cli.command("list")
def periodic_list(app: AppOption = None, as_json: JsonOpt = False) -> None:
    """Every periodic entry: schedule, zone, missed-run policy, paused, last and next fire."""
    settings()
    tw = loader.load(app)
    rows = periodic.list_entries(tw.app.conf, _client(tw))
    if as_json:
        out.print_json(json.dumps([row.as_dict() for row in rows]))
        return
    table = Table(title=f"periodic entries ({len(rows)})")
    for column in ("name", "task", "schedule", "zone", "missed", "state", "last fire",
                   "next fire"):
        table.add_column(column)
    for row in rows:
        missed = row.missed if row.missed != "run_all" else \
            f"run_all ({row.missed_window:g}s)"
        table.add_row(row.name, row.task, row.schedule, row.timezone, missed,
                      "[yellow]paused[/]" if row.paused else "active",
                      _at(row.last_fire, row.timezone), _at(row.next_fire, row.timezone))
    out.print(table)


@periodic_cli.command("pause")
def periodic_pause(name: str, app: AppOption = None) -> None:
    """Stop firing an entry until it is resumed (every beat, at its next tick)."""
    settings()
    tw = loader.load(app)
    with as_flags(_FLAGS):
        entry = periodic.pause(tw.app.conf, _client(tw), name)
    out.print(_line(entry))


@periodic_cli.command("resume")
def periodic_resume(name: str, app: AppOption = None) -> None:
    """Fire an entry again from its next due time (what it missed while paused is skipped)."""
    settings()
    tw = loader.load(app)
    with as_flags(_FLAGS):
        entry = periodic.resume(tw.app.conf, _client(tw), name)
    out.print(_line(entry))
