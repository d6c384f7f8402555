"""``taskworks autoscale``: run the worker supervisor alone, or show what it is doing."""

from __future__ import annotations

import json
import signal
import threading
from typing import Annotated, Any

import typer
from rich.table import Table

from taskworks.broker.urls import redis_client
from taskworks.cli import loader
from taskworks.cli.common import AppOption, out, settings, when
from taskworks.scaling.record import DecisionRecorder, current_status, recent_decisions
from taskworks.scaling.supervisor import Supervisor
from taskworks.store.migrate import upgrade

autoscale_cli = typer.Typer(help="The autoscaling worker supervisor.",
                            invoke_without_command=True)


def recorder_for(tw: Any) -> DecisionRecorder:
    """Decisions into ``tw``'s store, the live status into its broker's Redis."""
    client = redis_client(tw.settings.effective_broker_url, socket_timeout=5)
    return DecisionRecorder(tw.store, client, tw.settings.autoscale.interval * 3 + 5)


def supervisor_for(tw: Any, app_spec: str | None) -> Supervisor:
    recorder = recorder_for(tw)
    return Supervisor(tw.settings, app_spec=app_spec, on_change=recorder.record,
                      on_status=recorder.publish)


@autoscale_cli.callback()
def autoscale_run(ctx: typer.Context, app: AppOption = None) -> None:
    """Run the supervisor in the foreground until Ctrl-C (workers drain on the way out)."""
    if ctx.invoked_subcommand is not None:
        return
    from taskworks.stack import require_broker

    loaded = settings()
    tw = loader.load(app)
    require_broker(loaded)
    upgrade(tw.store)
    supervisor = supervisor_for(tw, app)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    out.print(f"autoscaling {', '.join(loaded.worker_groups)} every "
              f"{loaded.autoscale.interval:g}s; Ctrl-C drains the workers and stops")
    try:
        supervisor.run(stop)
    finally:
        supervisor.stop()
    out.print("stopped")


@autoscale_cli.command("status")
def autoscale_status(
    decisions: Annotated[int, typer.Option(min=0, help="recent decisions to show")] = 10,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    app: AppOption = None,
) -> None:
    """The running supervisor's workers per group, and its recent decisions."""
    settings()
    tw = loader.load(app)
    client = redis_client(tw.settings.effective_broker_url, socket_timeout=5)
    status = current_status(client)
    history = recent_decisions(tw.store, decisions) if decisions else []
    if as_json:
        out.print_json(json.dumps({"status": status, "decisions": history}, default=str))
        return
    if status is None:
        out.print("no supervisor is running (start one with 'taskworks up' or "
                  "'taskworks autoscale')")
    else:
        out.print(f"workers: {status['total']} total, {status['active']} active, "
                  f"{status['dead']} crashed; CPU {status['cpu_percent']}%, "
                  f"memory {status['memory_percent']}%")
        table = Table("group", "desired", "active", "draining", "restarts", "backlog", "reason")
        for name, group in status["groups"].items():
            table.add_row(name, str(group["desired"]), str(group["active"]),
                          str(group["draining"]), str(group["restarts"]),
                          json.dumps(group["backlog"]), group["reason"])
        out.print(table)
    if history:
        table = Table("when", "group", "change", "backlog", "reason", title="recent decisions")
        for row in history:
            table.add_row(when(row["decided_at"]), row["group"],
                          f"{row['previous']} -> {row['desired']}", str(row["backlog"]),
                          row["reason"])
        out.print(table)
