"""``taskworks dataset``: import, register, list, show and delete map-reduce datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from taskworks.cli.common import as_flags, err, out, settings, when
from taskworks.mapreduce.datasets import CHUNK_SIZE, DatasetInfo, Datasets
from taskworks.store.engine import Store

dataset_cli = typer.Typer(no_args_is_help=True, help="Datasets for map-reduce jobs.")

NameOpt = Annotated[str, typer.Option("--name", help="the dataset's name (unique)")]
ChunkOpt = Annotated[int, typer.Option(min=1, help="items inserted per statement")]

#: the library's parameter names as ``import`` and ``register`` spell them
_FLAGS = {"name": "--name", "format": "--format", "file": "FILE", "table": "--table",
          "query": "--query", "table/query": "--table/--query",
          "chunk_size": "--chunk-size", "source_url": "--source-url"}


def _datasets() -> Datasets:
    # a store not migrated yet fails its first query; `taskworks` (cli/main.py run) then
    # says to run `taskworks db upgrade` (store/schema_check.py)
    return Datasets(Store(settings().effective_database_url))


def _done(info: DatasetInfo) -> None:
    out.print(f"dataset {info.name!r} (id {info.id}): {info.row_count} items, "
              f"columns {', '.join(info.columns) or '-'}", markup=False, highlight=False)


@dataset_cli.command("import")
def dataset_import(
    file: Annotated[Path, typer.Argument(help="a .csv or .jsonl file")],
    name: NameOpt,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="csv or jsonl (default: from the file name)")] = None,
    infer: Annotated[bool, typer.Option(
        help="CSV: numbers as numbers and empty cells as null (else all text)")] = True,
    chunk_size: ChunkOpt = CHUNK_SIZE,
) -> None:
    """Import a CSV or JSONL file, all or nothing: bad rows are listed, nothing stored."""
    datasets = _datasets()
    size = file.stat().st_size if file.is_file() else None
    with as_flags(_FLAGS), Progress(TextColumn("{task.description}"), BarColumn(),
                               DownloadColumn(), TransferSpeedColumn(),
                               TimeRemainingColumn(), console=err,
                               transient=True) as progress:
        task = progress.add_task(f"importing {file.name}", total=size)
        info = datasets.import_file(file, name, fmt=fmt, infer_types=infer,
                                    chunk_size=chunk_size,
                                    progress=lambda done: progress.update(task, completed=done))
    _done(info)


@dataset_cli.command("register")
def dataset_register(
    name: NameOpt,
    table: Annotated[str | None, typer.Option(help="a table, indexed in primary-key order")
                     ] = None,
    query: Annotated[str | None, typer.Option(
        help="a SELECT, indexed in its ORDER BY order")] = None,
    source_url: Annotated[str | None, typer.Option(
        help="the database to read (default: the taskworks store)")] = None,
    chunk_size: ChunkOpt = CHUNK_SIZE,
) -> None:
    """Copy a SQL table or query into a dataset (dense item_index, all or nothing)."""
    datasets = _datasets()
    with as_flags(_FLAGS), Progress(TextColumn("{task.description}"),
                               TextColumn("{task.completed} rows"), console=err,
                               transient=True) as progress:
        task = progress.add_task(f"reading {table or 'query'}", total=None)
        info = datasets.register_sql(name, table=table, query=query, source_url=source_url,
                                     chunk_size=chunk_size,
                                     progress=lambda rows: progress.update(task,
                                                                           completed=rows))
    _done(info)


@dataset_cli.command("list")
def dataset_list(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
) -> None:
    """Every dataset, by name."""
    rows = _datasets().all()
    if as_json:
        for info in rows:
            typer.echo(json.dumps(_as_dict(info)))
        return
    table = Table(title=f"datasets ({len(rows)})")
    for column in ("id", "name", "source", "state", "items", "columns", "created"):
        table.add_column(column)
    for info in rows:
        table.add_row(str(info.id), info.name, info.source, info.state, str(info.row_count),
                      str(len(info.columns)), when(info.created_at))
    out.print(table)


@dataset_cli.command("show")
def dataset_show(
    name: str,
    head: Annotated[int, typer.Option(min=0, help="how many first items to print")] = 5,
) -> None:
    """One dataset: where it came from, its columns and its first items."""
    datasets = _datasets()
    report = {**_as_dict(datasets.get(name)), "head": datasets.head(name, head)}
    out.print_json(json.dumps(report, default=str))


@dataset_cli.command("delete")
def dataset_delete(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", help="no confirmation")] = False,
) -> None:
    """Delete a dataset and its items; refused while a running job reads or writes it."""
    datasets = _datasets()
    info = datasets.get(name)
    if not yes:
        typer.confirm(f"delete dataset {name!r} and its {info.row_count} items?", abort=True)
    removed = datasets.delete(name)
    out.print(f"dataset {name!r} deleted ({removed} items)", markup=False, highlight=False)


def _as_dict(info: DatasetInfo) -> dict[str, object]:
    return {"id": info.id, "name": info.name, "source": info.source, "origin": info.origin,
            "state": info.state, "row_count": info.row_count, "columns": info.columns,
            "created_at": info.created_at.isoformat()}
