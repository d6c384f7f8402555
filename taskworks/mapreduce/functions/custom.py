"""A function made of plain callables (``FunctionRegistry.custom``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from taskworks.errors import InvalidInput
from taskworks.mapreduce.functions.base import JobContext, MapContext, MapReduceFunction
from taskworks.mapreduce.partitions import Item

__all__ = ["CustomCheck", "CustomFunction", "CustomMap", "CustomReduce"]

#: a custom map: (params, items as (item_index, data) pairs) -> partial
CustomMap = Callable[[Mapping[str, Any], Iterable[Item]], Any]
#: a custom reduce: (params, partials in partition order) -> result
CustomReduce = Callable[[Mapping[str, Any], Sequence[Any]], Any]
CustomCheck = Callable[[Mapping[str, Any]], None]


class CustomFunction(MapReduceFunction):
    def __init__(self, name: str, map_fn: CustomMap, reduce_fn: CustomReduce,
                 check_fn: CustomCheck | None = None) -> None:
        self.name = name
        self._map = map_fn
        self._reduce = reduce_fn
        self._check = check_fn

    def check(self, params: Mapping[str, Any]) -> None:
        if not isinstance(params, Mapping):
            raise InvalidInput("params", params, "a JSON object")
        if self._check is not None:
            self._check(params)

    def map_partition(self, params: Mapping[str, Any], items: Iterable[Item],
                      ctx: MapContext | None = None) -> Any:
        return self._map(params, items)

    def reduce(self, params: Mapping[str, Any], partials: Sequence[Any],
               ctx: JobContext | None = None) -> Any:
        return self._reduce(params, partials)
