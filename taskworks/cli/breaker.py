"""``taskworks breaker``: circuit breakers' state, recent transitions, and reset."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from taskworks.cli import loader
from taskworks.cli.common import AppOption, out, settings, when
from taskworks.resilience.breaker import BreakerStatus

breaker_cli = typer.Typer(no_args_is_help=True, help="Circuit breakers shared by all workers.")

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
_STYLE = {"closed": "green", "open": "red", "half_open": "yellow"}


def _state(status: BreakerStatus) -> str:
    text = status.state.value
    if status.retry_after:
        text += f" ({status.retry_after:.1f}s left)"
    elif status.probe_in_flight:
        text += " (probe running)"
    return f"[{_STYLE[status.state.value]}]{text}[/]"


@breaker_cli.command("list")
def breaker_list(app: AppOption = None, as_json: JsonOpt = False) -> None:
    """Every breaker with state, or registered by the app."""
    settings()
    rows = loader.load(app).breakers.list()
    if as_json:
        out.print_json(json.dumps([row.as_dict() for row in rows]))
        return
    table = Table(title=f"circuit breakers ({len(rows)})")
    for column in ("name", "state", "failures", "successes", "failed (total)", "changed",
                   "last transition"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.name, _state(row), str(row.failures), str(row.successes),
                      str(row.failures_total), when(row.changed_at), row.last_transition or "-")
    out.print(table)


@breaker_cli.command("show")
def breaker_show(name: str, app: AppOption = None, as_json: JsonOpt = False,
                 recent: Annotated[int, typer.Option(min=1, max=1000)] = 20) -> None:
    """One breaker: state, counters and its recent transitions (newest first)."""
    settings()
    status = loader.load(app).breakers.show(name, recent)
    if as_json:
        out.print_json(json.dumps(status.as_dict()))
        return
    out.print(f"[bold]{status.name}[/bold]: {_state(status)}")
    out.print(f"consecutive failures {status.failures} (threshold "
              f"{status.failure_threshold or '-'}), successes {status.successes}, failures "
              f"{status.failures_total}, reset timeout {status.reset_timeout or '-'}s")
    out.print(f"last error: {status.last_error or '-'}", markup=False)
    table = Table(title="recent transitions")
    for column in ("at", "from", "to", "reason"):
        table.add_column(column)
    for t in status.recent:
        table.add_row(t.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], t.from_state, t.to_state,
                      t.reason)
    out.print(table)


@breaker_cli.command("reset")
def breaker_reset(name: str, app: AppOption = None) -> None:
    """Close a breaker now (the reset is journaled as a transition)."""
    settings()
    status = loader.load(app).breakers.reset(name, "reset from the command line")
    out.print(f"breaker {status.name} reset: {status.state.value}")
