"""``taskworks job``: run map-reduce jobs, watch their partitions, get their results."""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from taskworks.cli import loader
from taskworks.cli.common import AppOption, err, json_arg, out, settings, when
from taskworks.errors import InvalidInput
from taskworks.mapreduce.jobs import Jobs, JobStatus, PartitionFailurePolicy
from taskworks.mapreduce.partitions import DEFAULT_PARTITION_SIZE

job_cli = typer.Typer(no_args_is_help=True, help="Map-reduce jobs over datasets.")

WatchOpt = Annotated[bool, typer.Option("--watch", help="show partition progress live "
                                        "until the job ends (exit 0 if it completed)")]
SHOWN_PROBLEMS = 10


def _jobs(app: str | None) -> Jobs:
    settings()
    return loader.load(app).jobs


def _params(raw: str) -> dict[str, Any]:
    if raw.startswith("@"):
        path = Path(raw[1:])
        try:
            raw = path.read_text()
        except OSError as exc:
            raise InvalidInput("--params", str(path), f"a readable JSON file ({exc.strerror})"
                               ) from None
    value: dict[str, Any] = json_arg("--params", raw, dict)
    return value


def progress_view(status: JobStatus) -> Group:
    total = len(status.partitions)
    counts: dict[str, int] = {}
    for part in status.partitions:
        counts[part.state] = counts.get(part.state, 0) + 1
    head = Text(f"job {status.id}  {status.function} on {status.dataset}  "
                f"{status.state}  partitions {status.done}/{total}  reduce "
                f"{status.reduce_state.lower()}")
    bar = ProgressBar(total=max(total, 1), completed=status.done if total else 1, width=60)
    table = Table(show_header=True, box=None)
    for column in ("state", "partitions"):
        table.add_column(column)
    for state, count in sorted(counts.items()):
        table.add_row(state.lower(), str(count))
    problems = [p for p in status.partitions if p.error][:SHOWN_PROBLEMS]
    lines = [Text(f"  partition {p.index} [{p.start}, {p.end}) {p.state.lower()}: {p.error}",
                  style="red") for p in problems]
    if status.error:
        lines.append(Text(f"  job error: {status.error}", style="red"))
    return Group(head, bar, table, *lines)


def _watch(jobs: Jobs, job_id: str, interval: float = 0.3) -> JobStatus:
    status = jobs.status(job_id)
    with Live(progress_view(status), console=out, refresh_per_second=8) as live:
        while not status.finished:
            time.sleep(interval)
            status = jobs.status(job_id)
            live.update(progress_view(status))
    return status


def _end(status: JobStatus) -> None:
    if status.state != "completed":  # partial too: some partitions failed
        raise typer.Exit(1)


@job_cli.command("run")
def job_run(
    dataset: Annotated[str, typer.Option(help="the dataset's name")],
    function: Annotated[str, typer.Option(help="validation, transformation, analysis, "
                                          "aggregation or a registered custom function")],
    params: Annotated[str, typer.Option(help="JSON object, or @file.json")] = "{}",
    partition_size: Annotated[int, typer.Option(
        help="items per partition")] = DEFAULT_PARTITION_SIZE,
    on_partition_failure: Annotated[str, typer.Option(
        help="fail: a partition that failed for good fails the job; reduce: reduce over "
             "the partitions that succeeded and list the failed ones")] = "fail",
    watch: WatchOpt = False,
    app: AppOption = None,
) -> None:
    """Start a job; prints its id (with --watch, follows it to the end)."""
    jobs = _jobs(app)
    policy = cast(PartitionFailurePolicy, on_partition_failure)  # the library checks it
    try:
        job_id = jobs.start(dataset, function, _params(params), partition_size,
                            on_partition_failure=policy)
    except InvalidInput as exc:
        if exc.field != "on_partition_failure":
            raise
        raise InvalidInput("--on-partition-failure", exc.value, exc.expected) from None
    out.print(job_id)
    if watch:
        _end(_watch(jobs, job_id))


@job_cli.command("status")
def job_status(job_id: str, as_json: Annotated[bool, typer.Option("--json")] = False,
               watch: WatchOpt = False, app: AppOption = None) -> None:
    """A job's state and the progress of each partition."""
    jobs = _jobs(app)
    if watch:
        _end(_watch(jobs, job_id))
        return
    status = jobs.status(job_id)
    if as_json:
        typer.echo(json.dumps(status.to_dict()))
        return
    out.print(progress_view(status))
    out.print(f"created {when(status.created_at)}, finished {when(status.finished_at)}")


@job_cli.command("result")
def job_result(job_id: str,
               fmt: Annotated[str, typer.Option("--format", help="json or csv")] = "json",
               app: AppOption = None) -> None:
    """A completed job's result: JSON, or CSV (aggregation: its table; others: key,value
    rows with dotted keys)."""
    if fmt not in ("json", "csv"):
        raise InvalidInput("--format", fmt, "json or csv")
    jobs = _jobs(app)
    result = jobs.result(job_id)
    status = jobs.status(job_id)
    if status.state == "partial":
        err.print(f"[yellow]partial result[/]: {len(status.failed)} partition(s) failed and "
                  f"are not in it: {', '.join(str(p.index) for p in status.failed)}; "
                  "`taskworks job retry` redoes them")
    if fmt == "json":
        typer.echo(json.dumps(result, indent=2))
        return
    writer = csv.writer(sys.stdout)
    if isinstance(result, dict) and isinstance(result.get("columns"), list) \
            and isinstance(result.get("rows"), list):
        columns = result["columns"]
        writer.writerow(columns)
        for row in result["rows"]:
            writer.writerow([_cell(row.get(c)) for c in columns])
        return
    writer.writerow(["key", "value"])
    for key, value in flatten(result):
        writer.writerow([key, _cell(value)])


@job_cli.command("cancel")
def job_cancel(job_id: str,
               terminate: Annotated[bool, typer.Option(
                   help="also kill running partitions (prefork workers)")] = False,
               app: AppOption = None) -> None:
    """Cancel a job: pending partitions are dropped, queued and running ones revoked."""
    status = _jobs(app).cancel(job_id, terminate=terminate)
    out.print(f"job {job_id} {status.state} ({status.done}/{len(status.partitions)} "
              "partitions done; `taskworks job retry` runs the rest)")


@job_cli.command("retry")
def job_retry(job_id: str, watch: WatchOpt = False, app: AppOption = None) -> None:
    """Run again the failed or cancelled partitions of a job, then its reduce."""
    jobs = _jobs(app)
    status = jobs.retry(job_id)
    out.print(f"job {job_id} {status.state}: {len(status.partitions) - status.done} "
              "partition(s) to run")
    if watch:
        _end(_watch(jobs, job_id))


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts and lists as (dotted key, scalar) pairs."""
    if isinstance(value, dict) and value:
        return [pair for k, v in value.items()
                for pair in flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(value, list) and value:
        return [pair for i, v in enumerate(value)
                for pair in flatten(v, f"{prefix}.{i}" if prefix else str(i))]
    return [(prefix, value)]


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict | list) else value
