"""transformation: each item normalised and with calculated fields, written into a new
dataset at the same item_index (so partitions need no coordination); reduce marks it
ready."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from taskworks.mapreduce.datasets import Datasets, write_items
from taskworks.mapreduce.functions.base import (
    JobContext,
    MapContext,
    MapReduceFunction,
    Samples,
    fields_of,
)
from taskworks.mapreduce.functions.params import TransformationParams
from taskworks.mapreduce.partitions import Item

__all__ = ["Transformation", "transform"]


def transform(rules: TransformationParams, data: Mapping[str, Any]
              ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The transformed item, and (field, error) for each calculation that failed (its
    field is then null, as in the original script, but counted and sampled)."""
    out = dict(data)
    for field, ops in rules.normalize_fields.items():
        value = out.get(field)
        if isinstance(value, str):
            for op in ops:
                value = value.lower() if op == "lower" else value.strip()
            out[field] = value
    errors: list[tuple[str, str]] = []
    for field, expression in rules.calculated_fields.items():
        try:
            out[field] = expression.evaluate(out)
        except Exception as exc:  # any error of a user's expression on a user's item
            out[field] = None
            errors.append((field, f"{type(exc).__name__}: {exc}"))
    return out, errors


class Transformation(MapReduceFunction):
    name = "transformation"
    #: its output dataset needs every item: a gap would break the dense item_index
    partial_results = False

    def check(self, params: Mapping[str, Any]) -> None:
        TransformationParams.parse(params)

    def prepare(self, params: Mapping[str, Any], ctx: JobContext) -> dict[str, Any]:
        rules = TransformationParams.parse(params)
        name = rules.output or f"{ctx.dataset.name}_transformed"
        columns = list(dict.fromkeys([*ctx.dataset.columns, *rules.calculated_fields]))
        output = Datasets(ctx.store).create_output(
            name, f"job {ctx.job_id}: transformation of {ctx.dataset.name}", columns,
            field="params.output")
        return {**params, "output": name, "output_dataset_id": output.id}

    def map_partition(self, params: Mapping[str, Any], items: Iterable[Item],
                      ctx: MapContext) -> dict[str, Any]:
        rules = TransformationParams.parse(params)
        samples = Samples(rules.max_error_samples)

        def transformed() -> Iterable[Item]:
            for index, data in items:
                out, errors = transform(rules, fields_of(data))
                for field, message in errors:
                    samples.add(field, index, message)
                yield index, out

        with ctx.store.session() as session:
            written = write_items(session, int(params["output_dataset_id"]),
                                  ctx.partition.start, ctx.partition.end, transformed())
        return {"written": written, "errors": samples.rules}

    def reduce(self, params: Mapping[str, Any], partials: Sequence[Any],
               ctx: JobContext) -> dict[str, Any]:
        rules = TransformationParams.parse(params)
        written = sum(p["written"] for p in partials)
        columns = list(dict.fromkeys([*ctx.dataset.columns, *rules.calculated_fields]))
        Datasets(ctx.store).finish_output(int(params["output_dataset_id"]), written, columns)
        return {"output_dataset": params["output"], "items": written,
                "calculation_errors": Samples.merge(rules.max_error_samples,
                                                    (p["errors"] for p in partials))}
