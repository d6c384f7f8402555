"""Partitions: half-open index ranges [start, end) over a dataset, and a bounded reader.

Half-open ranges tile the index space exactly: partition k is
[k*size, min((k+1)*size, n)), consecutive partitions share no index and leave none out.
(The seed used ``BETWEEN start AND end`` with an exclusive end, so every boundary item was
processed by two partitions.)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from taskworks.errors import InvalidInput
from taskworks.store.engine import Store
from taskworks.store.tables import DatasetItem

PAGE_SIZE = 500

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
    cursor = partition.start
    while cursor < partition.end:
        with store.session() as session:
            page = session.execute(
                select(DatasetItem.item_index, DatasetItem.data)
                .where(DatasetItem.dataset_id == dataset_id,
                       DatasetItem.item_index >= cursor,
                       DatasetItem.item_index < partition.end)
                .order_by(DatasetItem.item_index).limit(page_size)).all()
        if not page:
            return
        yield from page
        cursor = page[-1][0] + 1
