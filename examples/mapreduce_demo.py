"""The patterns guide's run_distributed_processing_example, on taskworks' map-reduce jobs.

A generated dataset of people (some with a malformed email, a missing name or an id
that is not a number) is imported, then two jobs run over it in partitions on the
cpu_intensive workers: validation (id, name and email required and typed, email
pattern) and transformation (name and email normalised, a calculated name_length),
which writes a new dataset.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from taskworks.runtime.retry import RetryPolicy

DATASET = "demo_people"
OUTPUT = "demo_people_clean"


def generate(path: Path, rows: int, seed: int = 7) -> dict[str, int]:
    """Write ``rows`` people to ``path``; returns how many of each defect it planted."""
    rng = random.Random(seed)
    planted = {"bad_email": 0, "no_name": 0, "bad_id": 0}
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", "email", "age"])
        for i in range(rows):
            name, email, ident = f"  Person {i} ", f"Person.{i}@Example.org", str(i)
            roll = rng.random()
            if roll < 0.02:
                email = f"person{i}-at-example.org"
                planted["bad_email"] += 1
            elif roll < 0.03:
                name = ""
                planted["no_name"] += 1
            elif roll < 0.035:
                ident = f"X{i}"
                planted["bad_id"] += 1
            writer.writerow([ident, name, email, rng.randint(18, 90)])
    return planted


def mapreduce_scenario(tw: Any, console: Console, rows: int = 100_000,
                       partition_size: int = 10_000) -> None:
    datasets = tw.jobs.datasets
    path = tw.settings.data_dir / "demo_people.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    planted = generate(path, rows)
    for name in (DATASET, OUTPUT):
        if datasets.exists(name):
            datasets.delete(name)
    info = datasets.import_file(path, DATASET)
    console.print(f"imported {info.row_count:,} rows from {path.name} as dataset {DATASET!r}; "
                  f"planted defects: {planted}")

    validation = {
        "required_fields": ["id", "name", "email"],
        "type_validations": {"id": "int", "name": "str", "email": "str"},
        "patterns": {"email": r"[^@\s]+@[^@\s]+\.[A-Za-z]+"},
        "max_error_samples": 3,
    }
    transformation = {
        "normalize_fields": ["name", "email"],
        "calculated_fields": {"name_length": "len(name) if name else 0"},
        "output": OUTPUT,
    }
    jobs = {
        "validation": tw.jobs.start(DATASET, "validation", validation,
                                    partition_size=partition_size),
        "transformation": tw.jobs.start(DATASET, "transformation", transformation,
                                        partition_size=partition_size),
    }
    table = Table(title=f"Map-reduce over {rows:,} rows in partitions of {partition_size:,} "
                        f"(cpu_intensive workers)")
    for column in ("job", "state", "partitions", "result"):
        table.add_column(column)
    for function, job_id in jobs.items():
        status = tw.jobs.wait(job_id, timeout=600)
        result = tw.jobs.result(job_id) if status.state == "completed" else None
        table.add_row(function, status.state, f"{status.done}/{len(status.partitions)}",
                      _summary(function, result))
    console.print(table)
    sample = datasets.head(OUTPUT, 2)
    console.print(f"first items of {OUTPUT!r}: {sample}")
    partial_failure(tw, console, rows, partition_size)


def partial_failure(tw: Any, console: Console, rows: int, partition_size: int) -> None:
    """The partial-failure policy: one partition holds a corrupt row and fails for good;
    with ``on_partition_failure="reduce"`` the job still reduces the others."""
    poison = rows // 2 + 7
    job_id = tw.jobs.start(DATASET, "demo.ages_by_decade", {"poison": poison},
                           partition_size=partition_size,
                           retries=RetryPolicy(max_retries=0),
                           on_partition_failure="reduce")
    status = tw.jobs.wait(job_id, timeout=600)
    failed = ", ".join(f"{p.index} [{p.start}, {p.end}): {p.error}" for p in status.failed)
    result = tw.jobs.result(job_id) if status.state in ("completed", "partial") else None
    counted = sum(result.values()) if result else 0
    console.print(f"custom function demo.ages_by_decade with on_partition_failure=reduce: "
                  f"job {status.state}, {status.done}/{len(status.partitions)} partitions; "
                  f"failed {failed}; reduced over {counted:,} people: {result}")


def _summary(function: str, result: dict[str, Any] | None) -> str:
    if result is None:
        return "-"
    if function == "validation":
        rules = {rule: found["count"] for rule, found in result["errors"].items()}
        return f"valid {result['valid']:,}, invalid {result['invalid']:,}; by rule {rules}"
    return (f"new dataset {result['output_dataset']!r} with {result['items']:,} items; "
            f"calculation errors {result.get('calculation_errors') or {}}")


if __name__ == "__main__":
    from examples.demo_app import tw

    mapreduce_scenario(tw, Console(), rows=10_000, partition_size=2_000)
