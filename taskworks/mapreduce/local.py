"""Run a map-reduce function in this process, partition after partition.

The same plan, reader, map and reduce a distributed job uses, without workers: for tests,
small datasets and checking params. Partials go through a JSON round trip, as they would
between a worker and the reduce.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from taskworks.mapreduce.datasets import Datasets
from taskworks.mapreduce.functions import JobContext, MapContext
from taskworks.mapreduce.partitions import PAGE_SIZE, Partition, plan, read_partition
from taskworks.mapreduce.registry import FunctionRegistry
from taskworks.store.engine import Store


@dataclass(frozen=True)
class LocalRun:
    partitions: list[Partition]
    partials: list[Any]
    result: Any


def run_local(store: Store, dataset: str, function: str, params: dict[str, Any],
              partition_size: int, *, registry: FunctionRegistry | None = None,
              page_size: int = PAGE_SIZE) -> LocalRun:
    registry = registry or FunctionRegistry()
    fn = registry.get(function)
    fn.check(params)
    info = Datasets(store).get(dataset)
    partitions = plan(info.row_count, partition_size)
    ctx = JobContext(store, info, f"local-{uuid.uuid4().hex[:12]}")
    prepared = fn.prepare(params, ctx)
    partials = []
    for partition in partitions:
        items = read_partition(store, info.id, partition, page_size)
        partial = fn.map_partition(prepared, items, MapContext(store, info, ctx.job_id,
                                                               partition))
        partials.append(json.loads(json.dumps(partial)))
    return LocalRun(partitions, partials, fn.reduce(prepared, partials, ctx))
