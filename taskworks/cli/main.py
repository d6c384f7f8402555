"""The ``taskworks`` command: thin Typer commands over the library.

A user mistake (bad setting, bad argument, port in use) prints one clear message and
exits 2; a failed check (doctor) exits 1.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from typing import Annotated, NoReturn

import typer
from sqlalchemy.exc import DBAPIError

from taskworks.cli import loader
from taskworks.cli.api import api as api_command
from taskworks.cli.autoscale import autoscale_cli
from taskworks.cli.breaker import breaker_cli
from taskworks.cli.common import AppOption, err, json_arg, out, settings
from taskworks.cli.dataset import dataset_cli
from taskworks.cli.dlq import dlq_cli
from taskworks.cli.job import job_cli
from taskworks.cli.journal import journal_cli
from taskworks.cli.periodic import periodic_cli
from taskworks.cli.scheduled import scheduled_cli
from taskworks.cli.workflow import workflow_cli
from taskworks.errors import (
    InvalidInput,
    StoreError,
    StoreNotMigrated,
    TaskworksError,
    WorkersFailing,
)
from taskworks.settings import AutoscaleSettings

cli = typer.Typer(no_args_is_help=True, add_completion=False, help="Production background work "
                  "on Celery.")
db_cli = typer.Typer(no_args_is_help=True, help="The SQL store.")
cli.add_typer(db_cli, name="db")
cli.add_typer(journal_cli, name="journal")
cli.add_typer(dlq_cli, name="dlq")
cli.add_typer(workflow_cli, name="workflow")
cli.add_typer(breaker_cli, name="breaker")
cli.add_typer(autoscale_cli, name="autoscale")
cli.add_typer(dataset_cli, name="dataset")
cli.add_typer(job_cli, name="job")
cli.add_typer(periodic_cli, name="periodic")
cli.add_typer(scheduled_cli, name="scheduled")
cli.command("api")(api_command)

# the shared helpers under the names this module has always used
_settings = settings
_json_arg = json_arg


@cli.command()
def broker() -> None:
    """Run the embedded valkey-server in the foreground (reuses a running one)."""
    from taskworks.stack import embedded_broker

    settings = _settings()
    if not settings.embedded:
        raise InvalidInput("broker_url", settings.broker_url,
                           "unset, to use the embedded broker (it is set: nothing to start)")
    stop = False

    def request_stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    # before the banner: whoever reads it may stop us at once, and must get a clean stop
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    server_ctl = embedded_broker(settings)
    server, started = server_ctl.start()
    if not started:
        out.print(f"embedded broker already running at {server.url} (pid {server.pid}); reusing")
        return
    out.print(f"embedded broker at {server.url} (pid {server.pid}, AOF fsync "
              f"{settings.embedded_fsync}); Ctrl-C stops it")
    while not stop and server_ctl.running() is not None:
        time.sleep(1.0)
    server_ctl.stop()
    out.print("embedded broker stopped")


@db_cli.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply the store's migrations."""
    from taskworks.store.engine import Store
    from taskworks.store.migrate import current_revision, upgrade

    settings = _settings()
    store = Store(settings.effective_database_url)
    upgrade(store, revision)
    out.print(f"database at revision {current_revision(store)}")


@db_cli.command("wait")
def db_wait(
    timeout: Annotated[float, typer.Option(
        min=0, help="seconds to wait before giving up with exit 1 (0: check once)")] = 300,
    interval: Annotated[float, typer.Option(min=0.1, help="seconds between checks")] = 2,
) -> None:
    """Wait until the schema is at this release's newest revision (exit 1 on timeout).

    Another process runs `taskworks db upgrade`; workers and beat start after this exits 0.
    An unreachable database is waited for too (it may be starting)."""
    from taskworks.store.engine import Store
    from taskworks.store.migrate import head_revision, wait_for_head

    if not math.isfinite(interval):  # Typer's min= lets inf through (and refuses nan)
        raise InvalidInput("--interval", interval, "a finite number of seconds, 0.1 or more")
    settings = _settings()
    store = Store(settings.effective_database_url)

    def waiting(reason: str) -> None:
        err.print(f"waiting for schema revision {head_revision()}: {reason}", markup=False,
                  highlight=False)

    try:
        reason = wait_for_head(store, timeout, interval, on_wait=waiting)
    except StoreError as exc:  # a revision this release does not know: waiting cannot help
        err.print(f"error: {exc}", style="red", markup=False, highlight=False)
        raise typer.Exit(1) from None
    finally:
        store.dispose()
    if reason is not None:
        err.print(f"error: database_url: the schema is not at revision {head_revision()} "
                  f"after {timeout:g} s: {reason}; run `taskworks db upgrade` (on "
                  f"Kubernetes the API pod's init container does)", style="red",
                  markup=False, highlight=False)
        raise typer.Exit(1)
    out.print(f"database at revision {head_revision()} (the newest)")


@cli.command()
def worker(
    app: AppOption = None,
    group: Annotated[str | None, typer.Option(help="a worker group from settings")] = None,
    queues: Annotated[str | None, typer.Option(help="comma-separated queues")] = None,
    pool: Annotated[str | None, typer.Option(help="prefork, threads or solo")] = None,
    concurrency: Annotated[int | None, typer.Option(
        min=1, help="pool slots; without --pool or --group: solo processes (default: one "
        "per core)")] = None,
    hostname: Annotated[str | None, typer.Option(
        help="name@host; without --pool or --group each process is name-<i>@host")] = None,
) -> None:
    """Run Celery workers for a worker group or a list of queues.

    With --pool or --group: one Celery worker, in this process. Without either: one solo
    worker process per core (or --concurrency), supervised by this one."""
    from taskworks.stack import require_broker

    settings = _settings()
    tw = loader.load(app)
    if group is not None and group not in settings.worker_groups:
        raise InvalidInput("--group", group, f"one of {', '.join(settings.worker_groups)}")
    spec = settings.worker_groups[group] if group else None
    names = queues.split(",") if queues else (spec.queues if spec else tw.queue_names())
    for name in names:
        if name not in tw.queue_names():
            raise InvalidInput("--queues", name, f"one of {', '.join(tw.queue_names())}")
    chosen_pool = pool or (spec.pool if spec else None)
    if chosen_pool is not None and chosen_pool not in ("prefork", "threads", "solo"):
        raise InvalidInput("--pool", chosen_pool, "prefork, threads or solo")
    require_broker(settings)
    if chosen_pool is None:
        raise typer.Exit(_worker_set(app, names, concurrency, hostname, settings.autoscale))
    argv = [
        "worker", "--queues", ",".join(names), "--pool", chosen_pool,
        "--concurrency", str(concurrency or (spec.concurrency if spec else 2)),
        "--prefetch-multiplier", str(spec.prefetch_multiplier if spec else 1),
        "--loglevel", settings.log_level, "--without-mingle", "--without-gossip",
    ]
    if hostname:
        argv += ["--hostname", hostname]
    tw.app.worker_main(argv)


def _worker_set(app_spec: str | None, queues: list[str], count: int | None,
                hostname: str | None, restarts: AutoscaleSettings) -> int:
    """``taskworks worker`` without --pool or --group: solo processes, supervised (until
    a signal); the exit status."""
    from taskworks.scaling.workerset import WorkerSet, default_size

    workers = WorkerSet.solo(app_spec, queues, count or default_size(), hostname, restarts)
    try:
        return workers.run()
    except WorkersFailing as exc:
        err.print(f"error: {exc}", style="red", markup=False, highlight=False)
        return exc.status


@cli.command()
def beat(app: AppOption = None) -> None:
    """Run the periodic scheduler (several may run: one leads, the others stand by)."""
    from taskworks.scheduling.leader import LeaderScheduler
    from taskworks.stack import require_broker

    settings = _settings()
    tw = loader.load(app)
    require_broker(settings)
    tw.app.Beat(scheduler=LeaderScheduler, loglevel=settings.log_level, quiet=True).run()


@cli.command()
def up(
    app: AppOption = None,
    beat: Annotated[bool, typer.Option(help="also run the periodic scheduler")] = True,
    api: Annotated[bool, typer.Option(help="also serve the REST API, dashboard and /metrics")
                   ] = True,
) -> None:
    """Run everything: embedded broker, migrations, autoscaled workers, beat, API + dashboard."""
    from taskworks.api import make_server
    from taskworks.cli.autoscale import recorder_for
    from taskworks.redaction import redact_url
    from taskworks.stack import Stack
    from taskworks.store.migrate import upgrade

    settings = _settings()
    tw = loader.load(app)  # fail here, not in every child, when the app cannot load
    upgrade(tw.store)
    # a bad API bind (non-loopback without a token) stops us before anything starts
    api_server = make_server(tw) if api else None
    api_thread = threading.Thread(target=api_server.run, name="api", daemon=True) \
        if api_server is not None else None
    recorder = recorder_for(tw)
    stack = Stack(settings, app_spec=app, with_beat=beat, on_change=recorder.record,
                  on_status=recorder.publish)
    stack.catch_signals()  # before the start and its banner: a stop right after is clean
    try:
        server = stack.start()
        if api_thread is not None:
            api_thread.start()
        dashboard = (f"; dashboard http://{settings.api.host}:{settings.api.port}/"
                     if api else "")
        broker_shown = server.url if server else redact_url(settings.effective_broker_url)
        out.print(f"taskworks up: broker {broker_shown}; "
                  f"workers {', '.join(settings.worker_groups)} (autoscaled){dashboard}; "
                  f"Ctrl-C stops everything")
        stack.wait_until_signalled()
    finally:
        out.print("stopping: waiting for tasks in flight to finish")
        if api_server is not None and api_thread is not None:
            api_server.should_exit = True
            api_thread.join(10)
        stack.stop()
    out.print("stopped")


@cli.command()
def submit(
    name: str,
    args: Annotated[str, typer.Option(help="JSON array")] = "[]",
    kwargs: Annotated[str, typer.Option(help="JSON object")] = "{}",
    queue: Annotated[str | None, typer.Option()] = None,
    priority: Annotated[int | None, typer.Option(help="0-9, 9 the most urgent")] = None,
    countdown: Annotated[float | None, typer.Option(help="seconds (the durable schedule "
                                                    "keeps it)")] = None,
    expires: Annotated[float | None, typer.Option(help="seconds: not started by then, it "
                                                  "is not run")] = None,
    app: AppOption = None,
) -> None:
    """Send a registered task by name; prints its id."""
    _settings()
    tw = loader.load(app)
    result = tw.submit(name, _json_arg("--args", args, list), _json_arg("--kwargs", kwargs, dict),
                       queue=queue, priority=priority, countdown=countdown, expires=expires)
    out.print(result.id)


@cli.command("watch")
def watch_task(
    task_id: str,
    timeout: Annotated[float | None, typer.Option(min=0, help="give up after seconds")] = None,
    app: AppOption = None,
) -> None:
    """Show a task's progress bar until it ends, then print its result or error."""
    from taskworks.cli.watch import watch

    _settings()
    tw = loader.load(app)
    code = watch(tw.app, task_id, timeout=timeout, console=out)
    if code:
        raise typer.Exit(code)


@cli.command()
def doctor(app: AppOption = None) -> None:
    """Print the effective configuration (secrets hidden) and check that it works."""
    from taskworks.doctor import diagnose

    _settings()
    report = diagnose(loader.load(app))
    out.print_json(json.dumps(report.configuration))
    for check in report.checks:
        mark = "[green]ok[/green]" if check.ok else "[red]FAIL[/red]"
        out.print(f"{mark} {check.name}: {check.detail}")
    if not report.ok:
        raise typer.Exit(1)


def _fail(exc: TaskworksError) -> NoReturn:
    # markup off: messages quote user values, which may contain [brackets]
    err.print(f"error: {exc}", style="red", markup=False, highlight=False)
    sys.exit(2)


def _not_migrated(exc: DBAPIError) -> StoreNotMigrated | None:
    """``exc`` as "run `taskworks db upgrade`" when the schema is behind, else None. The
    store read is the settings' one: the one `taskworks db upgrade` migrates."""
    from taskworks.settings import load_settings
    from taskworks.store.engine import Store
    from taskworks.store.schema_check import not_migrated

    try:
        store = Store(load_settings().effective_database_url)
    except TaskworksError:
        return None
    try:
        return not_migrated(store, exc)
    finally:
        store.dispose()


def run() -> None:
    try:
        cli()
    except TaskworksError as exc:
        _fail(exc)
    except DBAPIError as exc:
        # translated here, on the error path only: no command pays a query up front
        translated = _not_migrated(exc)
        if translated is None:
            raise
        _fail(translated)
