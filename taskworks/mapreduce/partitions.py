"""Partitions: half-open index ranges [start, end) over a dataset, and a bounded reader.

Half-open ranges tile the index space exactly: partition k is
[k*size, min((k+1)*size, n)), consecutive partitions share no index and leave none out.
(The patterns guide used ``BETWEEN start AND end`` with an exclusive end, so every boundary item was
processed by two partitions.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, Text, bindparam, select, type_coerce

from taskworks.errors import InvalidInput
from taskworks.store.engine import Store
from taskworks.store.tables import DatasetItem

PAGE_SIZE = 500
#: items per partition unless the job says otherwise. Each partition is a workflow step,
#: which costs about 9 ms of worker CPU (task message, two store transactions, the
#: partial stored), so it should carry well over 100 ms of work: the built-ins take
#: 5-8 µs per item, so 25,000 items is 125-200 ms (bench/results/profile-mapreduce.md)
DEFAULT_PARTITION_SIZE = 25_000

_ITEMS = cast(Table, DatasetItem.__table__)


def _page_query(data: Any) -> Any:
    # Core, not the ORM: rows come back as plain tuples (the ORM's per-row loading cost
    # about a fifth of the read); one statement, compiled once and cached by SQLAlchemy
    return (select(_ITEMS.c.item_index, data)
            .where(_ITEMS.c.dataset_id == bindparam("dataset_id"),
                   _ITEMS.c.item_index >= bindparam("cursor"),
                   _ITEMS.c.item_index < bindparam("end"))
            .order_by(_ITEMS.c.item_index).limit(bindparam("page")))


_PAGE = _page_query(_ITEMS.c.data)
#: SQLite hands JSON back as text, which SQLAlchemy's JSON type decodes through two
#: wrappers per value; reading it as text and decoding here costs a third less per item
#: (PostgreSQL's driver decodes JSON itself)
_PAGE_TEXT = _page_query(type_coerce(_ITEMS.c.data, Text))
_decode = json.JSONDecoder().decode

#: one dataset item: (item_index, data)
Item = tuple[int, Any]


@dataclass(frozen=True)
class Partition:
    index: int
    start: int  # first item_index in the partition
    end: int  # one past the last

    @property
    def size(self) -> int:
        return self.end - self.start

    def to_dict(self) -> dict[str, int]:
        return {"index": self.index, "start": self.start, "end": self.end}


def plan(row_count: int, partition_size: int) -> list[Partition]:
    """The partitions of a dataset of ``row_count`` items; an empty dataset has none."""
    if isinstance(partition_size, bool) or not isinstance(partition_size, int) \
            or partition_size < 1:
        raise InvalidInput("partition_size", partition_size, "an integer >= 1")
    if isinstance(row_count, bool) or not isinstance(row_count, int) or row_count < 0:
        raise InvalidInput("row_count", row_count, "an integer >= 0")
    return [Partition(number, start, min(start + partition_size, row_count))
            for number, start in enumerate(range(0, row_count, partition_size))]


def read_partition(store: Store, dataset_id: int, partition: Partition,
                   page_size: int = PAGE_SIZE) -> Iterator[Item]:
    """The items of a partition in index order, fetched a page at a time by keyset
    pagination (``item_index >= cursor``), so at most one page is held in memory and each
    query is an index range scan whatever the offset."""
    if page_size < 1:
        raise InvalidInput("page_size", page_size, "an integer >= 1")
    as_text = store.engine.dialect.name == "sqlite"
    query = _PAGE_TEXT if as_text else _PAGE
    cursor = partition.start
    while cursor < partition.end:
        with store.engine.connect() as conn:  # one short read transaction per page
            page = conn.execute(query, {"dataset_id": dataset_id, "cursor": cursor,
                                        "end": partition.end, "page": page_size}).all()
        if not page:
            return
        if as_text:
            for index, data in page:
                yield index, _decode(data)
        else:
            for index, data in page:
                yield index, data
        cursor = page[-1][0] + 1
