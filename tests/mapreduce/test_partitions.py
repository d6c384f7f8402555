"""Partition plans tile the index space exactly; the reader pages by keyset."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskworks.errors import InvalidInput
from taskworks.mapreduce.local import run_local
from taskworks.mapreduce.partitions import Partition, plan, read_partition
from taskworks.mapreduce.registry import FunctionRegistry
from taskworks.store.engine import Store
from tests.mapreduce.conftest import load


@given(rows=st.integers(0, 500), size=st.integers(1, 600))
def test_plan_tiles_the_index_space(rows: int, size: int) -> None:
    parts = plan(rows, size)
    covered = [i for p in parts for i in range(p.start, p.end)]
    assert covered == list(range(rows))  # each index once, in order: none twice, none missed
    assert all(0 < p.size <= size for p in parts)
    assert [p.index for p in parts] == list(range(len(parts)))
    assert len(parts) == -(-rows // size)


def test_plan_examples() -> None:
    assert plan(10, 4) == [Partition(0, 0, 4), Partition(1, 4, 8), Partition(2, 8, 10)]
    assert plan(10, 10) == [Partition(0, 0, 10)]
    assert plan(3, 100) == [Partition(0, 0, 3)]
    assert plan(0, 5) == []


@pytest.mark.parametrize("size", [0, -1, True, 2.5, "3"])
def test_bad_partition_size(size: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        plan(10, size)
    assert caught.value.field == "partition_size"
    assert "an integer >= 1" in str(caught.value)


@pytest.mark.parametrize("page_size", [1, 2, 3, 50])
def test_reader_pages_through_exactly_its_range(store: Store, page_size: int) -> None:
    info = load(store, [{"n": i} for i in range(23)])
    other = load(store, [{"n": -i} for i in range(5)])  # another dataset must not leak in
    for part in plan(info.row_count, 5):
        got = list(read_partition(store, info.id, part, page_size))
        assert got == [(i, {"n": i}) for i in range(part.start, part.end)]
    assert list(read_partition(store, other.id, Partition(0, 0, 100), page_size)) == [
        (i, {"n": -i}) for i in range(5)]


def _seen(params: Any, items: Any) -> list[int]:
    return [index for index, _ in items]


def _concat(params: Any, partials: Any) -> list[int]:
    return [index for partial in partials for index in partial]


@pytest.mark.parametrize(("rows", "size"), [(20, 1), (20, 3), (20, 7), (20, 20), (20, 21),
                                            (1, 1), (0, 4)])
def test_each_item_processed_exactly_once(store: Store, rows: int, size: int) -> None:
    registry = FunctionRegistry()
    registry.custom("seen", map=_seen, reduce=_concat)
    info = load(store, [{"n": i} for i in range(rows)])
    run = run_local(store, info.name, "seen", {}, size, registry=registry, page_size=2)
    assert run.result == list(range(rows))
    assert [len(p) for p in run.partials] == [p.size for p in run.partitions]
