"""analysis: count, sum, avg, min and max per numeric field (and divided by its
normalization factor), and how many items fall in each category."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from taskworks.mapreduce.functions.base import (
    JobContext,
    MapContext,
    MapReduceFunction,
    add_to_stat,
    fields_of,
    final_stat,
    merge_stat,
    new_stat,
)
from taskworks.mapreduce.functions.params import AnalysisParams
from taskworks.mapreduce.partitions import Item
from taskworks.schema import is_number

__all__ = ["Analysis"]


class Analysis(MapReduceFunction):
    name = "analysis"

    def check(self, params: Mapping[str, Any]) -> None:
        AnalysisParams.parse(params)

    def map_partition(self, params: Mapping[str, Any], items: Iterable[Item],
                      ctx: MapContext | None = None) -> dict[str, Any]:
        rules = AnalysisParams.parse(params)
        metrics = {field: new_stat() for field in rules.numeric_fields}
        categories = dict.fromkeys(rules.categorization_rules, 0)
        total = 0
        for _index, data in items:
            total += 1
            fields = fields_of(data)
            for field in rules.numeric_fields:
                value = fields.get(field)
                if is_number(value):
                    add_to_stat(metrics[field], value)
            for name, category in rules.categorization_rules.items():
                if category.matches(fields):
                    categories[name] += 1
        return {"total": total, "metrics": metrics, "categories": categories}

    def reduce(self, params: Mapping[str, Any], partials: Sequence[Any],
               ctx: JobContext | None = None) -> dict[str, Any]:
        rules = AnalysisParams.parse(params)
        metrics = {field: new_stat() for field in rules.numeric_fields}
        categories = dict.fromkeys(rules.categorization_rules, 0)
        for partial in partials:
            for field, stat in partial["metrics"].items():
                merge_stat(metrics[field], stat)
            for name, count in partial["categories"].items():
                categories[name] += count
        result: dict[str, Any] = {}
        for field, stat in metrics.items():
            final = final_stat(stat)
            factor = rules.normalization_factors.get(field)
            if factor is not None:
                low, high = final["min"], final["max"]
                if factor < 0:
                    low, high = high, low
                final["normalization_factor"] = factor
                final["normalized"] = {
                    "sum": final["sum"] / factor,
                    "avg": None if final["avg"] is None else final["avg"] / factor,
                    "min": None if low is None else low / factor,
                    "max": None if high is None else high / factor}
            result[field] = final
        return {"total": sum(p["total"] for p in partials), "metrics": result,
                "categories": categories}
