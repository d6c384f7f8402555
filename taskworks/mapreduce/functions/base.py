"""The contract of a map-reduce function, and what the built-ins share (error samples,
running statistics).

A function turns a partition's items into a *partial* (a combiner's output: a small
JSON value, never the partition itself) and merges every partition's partial into the
final result. A partial's size depends on the params (rules, metrics, distinct groups),
not on the partition's size, so a map task's memory stays bounded.

    check(params)                      validate up front; InvalidInput names the field
    prepare(params, ctx)  -> params    once per job, before any partition (outputs)
    map_partition(params, items, ctx) -> partial   one partition, streamed
    reduce(params, partials, ctx)     -> result    once every partition is done

Partials travel as JSON: a reduce sees lists where a map built tuples.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskworks.mapreduce.datasets import DatasetInfo
from taskworks.mapreduce.partitions import Item, Partition
from taskworks.store.engine import Store

__all__ = ["JobContext", "MapContext", "MapReduceFunction", "Samples", "add_to_stat",
           "fields_of", "final_stat", "merge_stat", "new_stat"]


@dataclass(frozen=True)
class JobContext:
    """What a function may touch besides its items: the store and the input dataset."""

    store: Store
    dataset: DatasetInfo
    job_id: str


@dataclass(frozen=True)
class MapContext:
    store: Store
    dataset: DatasetInfo
    job_id: str
    partition: Partition


class MapReduceFunction(ABC):
    """A named map (with its combiner) and reduce. Subclass it, or register plain
    callables with ``FunctionRegistry.custom``."""

    name: str
    #: whether a reduce over some of the partitions means something (a job may then
    #: run with ``on_partition_failure="reduce"``)
    partial_results: bool = True

    def check(self, params: Mapping[str, Any]) -> None:  # noqa: B027  (optional hook)
        """Raise InvalidInput for params this function cannot run with."""

    def prepare(self, params: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
        """Called once before the partitions run; returns the params they will see."""
        return dict(params)

    @abstractmethod
    def map_partition(self, params: Mapping[str, Any], items: Iterable[Item],
                      ctx: MapContext) -> Any:
        """The partial of one partition's items (JSON-able, small)."""

    @abstractmethod
    def reduce(self, params: Mapping[str, Any], partials: Sequence[Any],
               ctx: JobContext) -> Any:
        """The final result from every partition's partial (in partition order)."""


def fields_of(data: Any) -> Mapping[str, Any]:
    """An item's fields: an item that is not an object has none."""
    return data if isinstance(data, Mapping) else {}


class Samples:
    """Per rule: how many errors, and the first ``cap`` of them by item_index. Taking
    the lowest indexes makes the sample the same however the data is partitioned."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.rules: dict[str, dict[str, Any]] = {}

    def add(self, rule: str, index: int, message: str) -> None:
        entry = self.rules.setdefault(rule, {"count": 0, "samples": []})
        entry["count"] += 1
        if len(entry["samples"]) < self.cap:  # items arrive in index order
            entry["samples"].append([index, message])

    @staticmethod
    def merge(cap: int, parts: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for part in parts:
            for rule, entry in part.items():
                into = merged.setdefault(rule, {"count": 0, "samples": []})
                into["count"] += entry["count"]
                into["samples"].extend(entry["samples"])
        for entry in merged.values():
            entry["samples"] = [{"item_index": i, "message": m}
                                for i, m in sorted(entry["samples"])[:cap]]
        return dict(sorted(merged.items()))


# -- running statistics (count, sum, min, max) as JSON-able dicts -------------------------


def new_stat() -> dict[str, Any]:
    return {"count": 0, "sum": 0, "min": None, "max": None}


def add_to_stat(stat: dict[str, Any], value: float | int) -> None:
    stat["count"] += 1
    stat["sum"] += value
    stat["min"] = value if stat["min"] is None else min(stat["min"], value)
    stat["max"] = value if stat["max"] is None else max(stat["max"], value)


def merge_stat(into: dict[str, Any], other: Mapping[str, Any]) -> None:
    into["count"] += other["count"]
    into["sum"] += other["sum"]
    for key, pick in (("min", min), ("max", max)):
        if other[key] is not None:
            into[key] = other[key] if into[key] is None else pick(into[key], other[key])


def final_stat(stat: Mapping[str, Any]) -> dict[str, Any]:
    count = stat["count"]
    return {"count": count, "sum": stat["sum"], "avg": stat["sum"] / count if count else None,
            "min": stat["min"], "max": stat["max"]}
