"""Datasets: named, ordered collections of JSON items in the SQL store.

Every dataset is materialised in ``dataset_items`` with a dense ``item_index``
(0..row_count-1), whatever its source, so a partition is a plain half-open index range
and a map task reads it by keyset pagination without coordinating with anyone.

Imports are all or nothing: one transaction holds the dataset row and every chunk of
items; a bad row (its line number is reported) rolls the whole import back. Files are
read as a stream and inserted in chunks, so memory stays bounded whatever the file size;
the readers (taskworks/mapreduce/readers.py) bound each line, nesting and number too.
On SQLite the import holds the write lock for its duration (other writers wait, up to the
busy timeout); PostgreSQL writers are not blocked.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine, MetaData, Table, delete, inspect, select, text, update
from sqlalchemy.exc import DataError, IntegrityError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.orm import Session

from taskworks.errors import BadRows, InvalidInput
from taskworks.mapreduce.readers import (
    BadRow,
    CountingReader,
    csv_rows,
    jsonl_rows,
    text_stream,
)
from taskworks.store.engine import Store, make_engine
from taskworks.store.tables import Dataset, DatasetItem, MapReduceJob, WorkflowRun
from taskworks.workflows.model import RunState

__all__ = ["CHUNK_SIZE", "FORMATS", "MAX_NAME_LENGTH", "MAX_REPORTED_BAD_ROWS",
           "DatasetInfo", "Datasets", "RowsDone", "jsonable", "write_items"]

CHUNK_SIZE = 1000
MAX_REPORTED_BAD_ROWS = 20
FORMATS = ("csv", "jsonl")
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_ITEMS = cast(Table, DatasetItem.__table__)
#: control characters: a name is shown in terminals and pages, and PostgreSQL refuses NUL
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_LENGTH = 255
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")

#: called with how far the source has been read (bytes of a file, rows of a query)
RowsDone = Callable[[int], None]


@dataclass(frozen=True)
class DatasetInfo:
    id: int
    name: str
    source: str
    origin: str | None
    state: str
    row_count: int
    columns: list[str]
    created_at: dt.datetime

    @classmethod
    def of(cls, row: Dataset) -> DatasetInfo:
        return cls(row.id, row.name, row.source, row.origin, row.state, row.row_count,
                   list(row.columns or []), row.created_at)


def jsonable(value: Any) -> Any:
    """A database value as JSON (dates as ISO 8601, decimals as numbers, UUIDs as text)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


class Datasets:
    """Import, register, list, read and delete datasets in one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reading -------------------------------------------------------------------------

    def all(self) -> list[DatasetInfo]:
        with self.store.session() as session:
            rows = session.scalars(select(Dataset).order_by(Dataset.name)).all()
            return [DatasetInfo.of(row) for row in rows]

    def get(self, name: str) -> DatasetInfo:
        with self.store.session() as session:
            row = session.scalars(select(Dataset).where(Dataset.name == name)).first()
            if row is None:
                raise InvalidInput("dataset", name, "the name of a dataset "
                                   "(see `taskworks dataset list`)")
            return DatasetInfo.of(row)

    def by_id(self, dataset_id: int) -> DatasetInfo:
        with self.store.session() as session:
            row = session.get(Dataset, dataset_id)
            if row is None:
                raise InvalidInput("dataset", dataset_id, "the id of an existing dataset")
            return DatasetInfo.of(row)

    def exists(self, name: str) -> bool:
        with self.store.session() as session:
            return session.scalar(select(Dataset.id).where(Dataset.name == name)) is not None

    def head(self, name: str, limit: int = 5) -> list[dict[str, Any]]:
        dataset = self.get(name)
        with self.store.session() as session:
            rows = session.execute(
                select(DatasetItem.item_index, DatasetItem.data)
                .where(DatasetItem.dataset_id == dataset.id)
                .order_by(DatasetItem.item_index).limit(limit))
            return [{"item_index": index, "data": data} for index, data in rows]

    def delete(self, name: str) -> int:
        """Delete a dataset and its items; returns how many items went. Refused while a
        running job reads or writes it (its partitions would find their items gone)."""
        dataset = self.get(name)
        with self.store.session() as session:
            job = _running_job_using(session, dataset.id)
            if job is not None:
                raise InvalidInput("name", name, f"a dataset no running job uses (job {job} "
                                   "does: cancel it first)")
            removed = session.connection().execute(
                delete(DatasetItem).where(DatasetItem.dataset_id == dataset.id)).rowcount
            session.execute(delete(Dataset).where(Dataset.id == dataset.id))
            return int(removed or 0)

    # -- importing a file ----------------------------------------------------------------

    def import_file(self, path: str | Path, name: str, *, fmt: str | None = None,
                    infer_types: bool = True, chunk_size: int = CHUNK_SIZE,
                    progress: RowsDone | None = None, origin: str | None = None
                    ) -> DatasetInfo:
        """Import a CSV or JSONL file, all or nothing (see the module docstring).

        ``progress`` is called after each chunk with the bytes read so far. ``origin``
        is what the dataset says it came from and what errors call the file (default:
        its path; an upload spooled to a temporary file names the upload instead)."""
        path = Path(path)
        origin = str(path) if origin is None else origin
        fmt = fmt or _SUFFIXES.get(path.suffix.lower())
        if fmt not in FORMATS:
            raise InvalidInput("format", fmt or path.suffix,
                               "csv or jsonl (or a file ending in .csv, .jsonl, .ndjson)")
        if chunk_size < 1:
            raise InvalidInput("chunk_size", chunk_size, "an integer >= 1")
        self._check_new_name(name)
        try:
            raw = path.open("rb")
        except OSError as exc:
            raise InvalidInput("file", origin, f"a readable file ({exc.strerror})") from None
        with raw:
            counter = CountingReader(raw)
            stream = text_stream(counter, fmt)
            rows = csv_rows(stream, infer_types) if fmt == "csv" else jsonl_rows(stream)
            return self._store_rows(name, fmt, origin, rows, chunk_size, "file",
                                    lambda: progress(counter.count) if progress else None)

    # -- registering a SQL table or query ------------------------------------------------

    def register_sql(self, name: str, *, table: str | None = None, query: str | None = None,
                     source_url: str | None = None, chunk_size: int = CHUNK_SIZE,
                     progress: RowsDone | None = None) -> DatasetInfo:
        """Materialise a table (ordered by its primary key) or a query (in its own ORDER
        BY order: give one for a reproducible index) as a dataset, all or nothing.

        The source is read on its own connection, streamed (server-side cursor on
        PostgreSQL); ``source_url`` names another database, default the store's."""
        if (table is None) == (query is None):
            raise InvalidInput("table/query", table or query, "exactly one of the two")
        if chunk_size < 1:
            raise InvalidInput("chunk_size", chunk_size, "an integer >= 1")
        self._check_new_name(name)
        engine = make_engine(source_url) if source_url else self.store.engine
        try:
            if table is not None:
                statement: Any = self._table_select(engine, table)
                source, origin = "table", table
            else:
                assert query is not None
                if not re.match(r"\s*(select|with)\b", query, re.IGNORECASE):
                    raise InvalidInput("query", query, "a SELECT (or WITH ... SELECT) query")
                statement, source, origin = text(query), "query", query
            return self._store_rows(name, source, origin,
                                    self._sql_rows(engine, statement, chunk_size),
                                    chunk_size, source, None, progress)
        finally:
            if source_url:
                engine.dispose()

    @staticmethod
    def _table_select(engine: Engine, table: str) -> Any:
        if not _IDENTIFIER.fullmatch(table):
            raise InvalidInput("table", table, "a table name, optionally schema.table")
        schema, _, bare = table.rpartition(".")
        try:
            reflected = Table(bare, MetaData(), schema=schema or None, autoload_with=engine)
        except NoSuchTableError:
            raise InvalidInput("table", table, "an existing table") from None
        keys = inspect(engine).get_pk_constraint(bare, schema=schema or None)
        columns = keys.get("constrained_columns") or []
        if not columns:
            raise InvalidInput("table", table, "a table with a primary key (items are "
                               "indexed in primary-key order); use a query with ORDER BY")
        return select(reflected).order_by(*(reflected.c[c] for c in columns))

    @staticmethod
    def _sql_rows(engine: Engine, statement: Any, chunk_size: int
                  ) -> Iterator[tuple[int, Any]]:
        try:
            with engine.connect() as conn:
                result = conn.execution_options(stream_results=True,
                                                yield_per=chunk_size).execute(statement)
                for number, row in enumerate(result, start=1):
                    yield number, {str(k): jsonable(v) for k, v in row._mapping.items()}
        except SQLAlchemyError as exc:
            reason = getattr(exc, "orig", None) or exc
            raise InvalidInput("query", str(statement), "a query the source database runs "
                               f"({exc.__class__.__name__}: {reason})") from None

    # -- storing -------------------------------------------------------------------------

    def _check_new_name(self, name: str, field: str = "name") -> None:
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH \
                or _CONTROL.search(name):
            raise InvalidInput(field, name, f"a non-empty name of at most {MAX_NAME_LENGTH} "
                               "characters, no control characters")
        if self.exists(name):
            raise InvalidInput(field, name, "a name no dataset has yet (delete the old "
                               "one first: taskworks dataset delete)")

    def _store_rows(self, name: str, source: str, origin: str,
                    rows: Iterable[tuple[int, Any]], chunk_size: int, field: str,
                    tick: Callable[[], None] | None = None,
                    row_progress: RowsDone | None = None) -> DatasetInfo:
        """Insert ``rows`` as a new dataset in one transaction. ``field`` is the parameter
        the rows came from (file, table, query): errors about them name it."""
        bad: list[BadRow] = []
        bad_total = 0
        columns: dict[str, None] = {}  # ordered by first appearance
        chunk: list[dict[str, Any]] = []
        count = last_line = 0
        try:
            with self.store.session() as session:
                dataset = Dataset(name=name, source=source, origin=origin, state="ready",
                                  row_count=0, columns=[])
                session.add(dataset)
                session.flush()
                for line, item in rows:
                    last_line = line
                    if isinstance(item, BadRow):
                        bad_total += 1
                        if len(bad) < MAX_REPORTED_BAD_ROWS:
                            bad.append(item)
                        continue
                    if bad_total:  # doomed: keep reading only to report every bad row
                        continue
                    columns.update(dict.fromkeys(item))
                    chunk.append({"dataset_id": dataset.id, "item_index": count, "data": item})
                    count += 1
                    if len(chunk) >= chunk_size:
                        _insert(session, chunk)
                        chunk = []
                        if tick:
                            tick()
                        if row_progress:
                            row_progress(line)
                if bad_total:
                    raise BadRows(origin, bad, bad_total)  # rolls the transaction back
                _insert(session, chunk)
                dataset.row_count = count
                dataset.columns = list(columns)
                if tick:
                    tick()
                if row_progress:
                    row_progress(count)
                info = DatasetInfo.of(dataset)
        except UnicodeDecodeError as exc:
            raise BadRows(origin, [*bad, BadRow(last_line + 1, f"(or a line soon after) not "
                                               f"UTF-8 ({exc.reason})")], bad_total + 1) from None
        except IntegrityError:  # another import took the name meanwhile
            raise InvalidInput("name", name, "a name no dataset has yet") from None
        except DataError as exc:  # e.g. a NUL character, which PostgreSQL does not store
            raise InvalidInput(field, origin, "values the store accepts "
                               f"({type(exc.orig).__name__})") from None
        return info

    # -- job outputs ---------------------------------------------------------------------

    def create_output(self, name: str, origin: str, columns: Sequence[str], *,
                      field: str = "name") -> DatasetInfo:
        """An empty dataset in state ``building`` that partitions write into. ``field``
        is the parameter that named it, for errors (a job's ``params.output``)."""
        self._check_new_name(name, field)
        try:
            with self.store.session() as session:
                row = Dataset(name=name, source="job", origin=origin, state="building",
                              row_count=0, columns=list(columns))
                session.add(row)
                session.flush()
                return DatasetInfo.of(row)
        except IntegrityError:
            raise InvalidInput(field, name, "a name no dataset has yet") from None

    def finish_output(self, dataset_id: int, row_count: int, columns: Sequence[str]) -> None:
        with self.store.session() as session:
            session.execute(update(Dataset).where(Dataset.id == dataset_id)
                            .values(state="ready", row_count=row_count, columns=list(columns)))


def write_items(session: Session, dataset_id: int, start: int, end: int,
                items: Iterable[tuple[int, Any]], chunk_size: int = CHUNK_SIZE) -> int:
    """Replace the items of [start, end) of a dataset with ``items`` ((index, data) with
    start <= index < end), in the caller's transaction: a redone partition overwrites its
    own range and nothing else. Returns how many were written."""
    session.execute(delete(DatasetItem).where(DatasetItem.dataset_id == dataset_id,
                                              DatasetItem.item_index >= start,
                                              DatasetItem.item_index < end))
    written = 0
    chunk: list[dict[str, Any]] = []
    for index, data in items:
        if not start <= index < end:
            raise ValueError(f"item_index {index} outside the partition [{start}, {end})")
        chunk.append({"dataset_id": dataset_id, "item_index": index, "data": data})
        if len(chunk) >= chunk_size:
            _insert(session, chunk)
            written += len(chunk)
            chunk = []
    _insert(session, chunk)
    return written + len(chunk)


def _running_job_using(session: Session, dataset_id: int) -> str | None:
    """The id of a running job reading this dataset or writing it (a transformation's
    output), if any."""
    stmt = (select(MapReduceJob.id, MapReduceJob.dataset_id, MapReduceJob.params)
            .join(WorkflowRun, WorkflowRun.id == MapReduceJob.id)
            .where(WorkflowRun.state == RunState.RUNNING.value))
    for job_id, input_id, params in session.execute(stmt):
        output_id = params.get("output_dataset_id") if isinstance(params, dict) else None
        if dataset_id in (input_id, output_id):
            return str(job_id)
    return None


def _insert(session: Session, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(_ITEMS.insert(), rows)
