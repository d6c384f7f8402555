"""Real step tasks for the patterns guide's workflows, and the predicate the conditional one uses.

``register(tw)`` declares them on an app (the demo's, or yours). Each step gets
``input`` (the run input), ``results`` (its dependencies' results by step name) and
its ``params`` as keyword arguments.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from taskworks.logs import get_logger

if TYPE_CHECKING:
    from taskworks.app import Taskworks

log = get_logger("examples.workflows")
Results = dict[str, Any]


def make_dataset(dataset_id: int, rows: int = 500) -> list[dict[str, Any]]:
    """A deterministic dataset for an id: readings with some gaps (None) and outliers."""
    rng = random.Random(dataset_id)
    data = []
    for i in range(rows):
        value = rng.gauss(100, 15) if rng.random() > 0.05 else None
        if value is not None and rng.random() < 0.01:
            value *= 10  # an outlier
        data.append({"id": i, "sensor": f"s{i % 7}", "value": value})
    return data


def medium_sized(doc: Mapping[str, Any]) -> bool:
    size = doc["results"]["check_prerequisites"]["data_size"]
    return bool(10_000 < size <= 1_000_000)


def register(tw: Taskworks) -> None:
    tw.workflows.predicates.register("medium_sized", medium_sized)

    @tw.task(name="workflows.validate_data")
    def validate_data(input: Results, results: Results, validation_rules: str) -> Results:
        dataset_id = input.get("dataset_id")
        if not isinstance(dataset_id, int):
            raise ValueError(f"dataset_id: got {dataset_id!r}, expected an integer")
        data = make_dataset(dataset_id)
        missing = sum(1 for row in data if row["value"] is None)
        threshold = input.get("processing_options", {}).get("quality_threshold", 0.9)
        quality = 1 - missing / len(data)
        if validation_rules == "strict" and quality < threshold:
            raise ValueError(f"quality {quality:.3f} below {threshold}")
        return {"dataset_id": dataset_id, "rows": len(data), "missing": missing,
                "quality": round(quality, 4)}

    @tw.task(name="workflows.clean_dataset")
    def clean_dataset(input: Results, results: Results,
                      cleaning_options: Mapping[str, Any]) -> Results:
        data = make_dataset(results["validate_input"]["dataset_id"])
        if cleaning_options.get("remove_nulls"):
            data = [row for row in data if row["value"] is not None]
        return {"rows": data, "removed": results["validate_input"]["rows"] - len(data)}

    @tw.task(name="workflows.transform_dataset")
    def transform_dataset(input: Results, results: Results,
                          transformation_rules: str) -> Results:
        rows = results["clean_data"]["rows"]
        values = [row["value"] for row in rows]
        mean, stdev = statistics.fmean(values), statistics.pstdev(values) or 1.0
        # standard: z-scores; readings beyond 4 sigma are dropped as outliers
        scored = [{**row, "z": (row["value"] - mean) / stdev} for row in rows]
        kept = [row for row in scored if abs(row["z"]) <= 4]
        return {"rows": kept, "outliers": len(scored) - len(kept),
                "rules": transformation_rules}

    @tw.task(name="workflows.analyze_dataset")
    def analyze_dataset(input: Results, results: Results, analysis_type: str) -> Results:
        rows = results["transform_data"]["rows"]
        by_sensor: dict[str, list[float]] = {}
        for row in rows:
            by_sensor.setdefault(row["sensor"], []).append(row["value"])
        values = [row["value"] for row in rows]
        return {
            "type": analysis_type, "count": len(values),
            "mean": round(statistics.fmean(values), 3),
            "median": round(statistics.median(values), 3),
            "stdev": round(statistics.pstdev(values), 3),
            "per_sensor": {s: round(statistics.fmean(v), 2) for s, v in sorted(by_sensor.items())},
            "outliers_removed": results["transform_data"]["outliers"],
        }

    @tw.task(name="workflows.generate_analysis_report")
    def generate_analysis_report(input: Results, results: Results, format: str) -> Results:
        a = results["analyze_data"]
        lines = [f"# dataset {input['dataset_id']}", "",
                 f"{a['count']} readings, mean {a['mean']}, median {a['median']}, "
                 f"stdev {a['stdev']}, {a['outliers_removed']} outliers removed", ""]
        lines += [f"- {sensor}: {mean}" for sensor, mean in a["per_sensor"].items()]
        return {"format": format, "report": "\n".join(lines)}

    @tw.task(name="workflows.send_completion_notification")
    def send_completion_notification(input: Results, results: Results,
                                     notification_type: str) -> Results:
        recipients = list(input.get("notification_recipients", []))
        first_line = results["generate_report"]["report"].splitlines()[0]
        log.info("workflow finished", channel=notification_type, recipients=recipients,
                 subject=first_line)
        return {"channel": notification_type, "recipients": recipients, "subject": first_line}

    @tw.task(name="workflows.check_data_prerequisites")
    def check_data_prerequisites(input: Results, results: Results) -> Results:
        size = input.get("data_size")
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"data_size: got {size!r}, expected an integer >= 0")
        return {"data_size": size, "ok": True}

    @tw.task(name="workflows.quick_data_analysis")
    def quick_data_analysis(input: Results, results: Results, mode: str) -> Results:
        sample = make_dataset(input.get("dataset_id", 1), rows=100)
        values = [r["value"] for r in sample if r["value"] is not None]
        return {"mode": mode, "sampled": len(values), "mean": round(statistics.fmean(values), 2)}

    @tw.task(name="workflows.detailed_data_analysis")
    def detailed_data_analysis(input: Results, results: Results, mode: str) -> Results:
        data = make_dataset(input.get("dataset_id", 1), rows=5000)
        values = [r["value"] for r in data if r["value"] is not None]
        quartiles = statistics.quantiles(values, n=4)
        return {"mode": mode, "rows": len(values),
                "quartiles": [round(q, 2) for q in quartiles]}

    @tw.task(name="workflows.conditional_data_processing")
    def conditional_data_processing(input: Results, results: Results) -> Results:
        chosen = [name for name, value in results.items() if value is not None]
        return {"analysis": chosen[0] if chosen else None,
                "data_size": input.get("data_size")}
