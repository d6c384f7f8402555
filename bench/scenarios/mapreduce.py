"""Map-reduce (issues 6 and 9): a validation job plus an aggregation job over a generated
dataset of 1,000,000 rows on one ``cpu`` worker group worker (prefork, 2 processes: one
per core, the shipped group), against the same computation in one plain Python process,
in the same run, reading the same SQLite store.

- **taskworks**: both jobs started at once (``tw.jobs.start``), the clock runs from the
  first ``start`` until both runs are over (their reduce steps stored the results);
- **plain Python process**: a fresh interpreter (started before its clock) runs the same
  two functions with ``run_local`` over the whole dataset as one partition, so it reads
  the dataset twice like the two jobs do, through the same reader and the same
  function code: what differs is only the distribution.

Both results are compared: a run whose results differ fails. Peak memory: the highest
``VmHWM`` (peak resident set) of the worker's pool processes, sampled during the runs
(a recycled child's peak is kept), and the plain process's ``ru_maxrss``, each at the
full size and at a tenth of it, on fresh processes, to show that it does not grow with
the dataset. The datasets are generated once per run (bulk insert, not timed).

CPU µs per row: the worker's whole process tree (the Celery parent included) against
the plain process's own CPU time. On a machine shared with other work the wall-clock
speedup measures the load as much as taskworks; ``2 / (CPU ratio)`` is the speedup the
two processes would reach on two idle cores if they never waited.

Standalone: ``python -m bench.scenarios.mapreduce [rows] [runs]`` prints the figures;
``python -m bench.scenarios.mapreduce plain DATABASE_URL DATASET`` is the plain side.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil

from bench.core import BenchEnv, Column, Figure, Ratio, Scenario, Sizes, register
from bench.procs import Workers, python
from taskworks import Taskworks

#: rows of the full dataset, by size name (the memory figure also runs a tenth of it)
ROWS = {"full": 1_000_000, "small": 100_000, "tiny": 5_000}
#: rows per partition: the jobs' default (DEFAULT_PARTITION_SIZE) unless BENCH_MR_PARTITION
PARTITION_SIZE = int(os.environ.get("BENCH_MR_PARTITION", "0")) or None

VALIDATION: dict[str, Any] = {
    "required_fields": ["id", "name", "email", "age"],
    "type_validations": {"id": "int", "name": "str", "email": "str", "age": "int"},
    "patterns": {"email": r"[^@\s]+@[^@\s]+\.[a-z]+"},
    "ranges": {"age": {"min": 0, "max": 120}},
    "max_error_samples": 5,
}
AGGREGATION: dict[str, Any] = {
    "group_by": ["country", "plan"],
    "aggregate_fields": {"amount": ["sum", "avg", "min", "max"], "age": ["avg"],
                         "id": "count"},
}
JOBS = (("validation", VALIDATION), ("aggregation", AGGREGATION))
COUNTRIES = ("de", "fr", "it", "es", "pl", "nl", "se", "us", "br", "jp", "in", "ng")
PLANS = ("free", "basic", "pro", "team")

TASKWORKS_SIDE = "taskworks, 2 worker processes"
PLAIN_SIDE = "plain Python process"
#: the same sides on a tenth of the rows (the memory figure)
TENTH = ", a tenth of the rows"


def rows_for(sizes: Sizes) -> int:
    """The full dataset's rows at this size (BENCH_MR_ROWS overrides)."""
    if os.environ.get("BENCH_MR_ROWS"):
        return int(os.environ["BENCH_MR_ROWS"])
    if sizes.drain_tasks >= 20_000:
        return ROWS["full"]
    return ROWS["small"] if sizes.drain_tasks >= 2_000 else ROWS["tiny"]


def build(**overrides: Any) -> Taskworks:
    from taskworks.settings import load_settings

    return Taskworks(settings=load_settings(**overrides)) if overrides else Taskworks()


_tw: Taskworks | None = None


def __getattr__(name: str) -> Any:
    global _tw
    if name == "tw":  # the workers' app (--app bench.scenarios.mapreduce:tw)
        if _tw is None:
            _tw = build()
        return _tw
    raise AttributeError(name)


# -- the dataset --------------------------------------------------------------------------


def people(rows: int, seed: int = 6) -> Iterator[dict[str, Any]]:
    """People with about 4 % planted defects (bad email, missing name, text id, age out
    of range), a country and a plan to group by, an amount to aggregate."""
    rng = random.Random(seed)  # noqa: S311  (test data, not secrets)
    for i in range(rows):
        item: dict[str, Any] = {
            "id": i, "name": f"Person {i}", "email": f"person.{i}@example.org",
            "age": rng.randint(18, 90), "country": COUNTRIES[rng.randrange(len(COUNTRIES))],
            "plan": PLANS[rng.randrange(len(PLANS))],
            "amount": round(rng.uniform(1, 500), 2)}
        roll = rng.random()
        if roll < 0.015:
            item["email"] = f"person{i}-at-example.org"
        elif roll < 0.025:
            del item["name"]
        elif roll < 0.035:
            item["id"] = f"X{i}"
        elif roll < 0.04:
            item["age"] = 200
        yield item


def generate(tw: Taskworks, name: str, rows: int, chunk: int = 20_000) -> None:
    """Insert the dataset directly (executemany of pre-serialised JSON, one transaction):
    an import through the CSV reader would take longer than the jobs."""
    from taskworks.store.tables import Dataset

    with tw.store.session() as session:
        dataset = Dataset(name=name, source="table", origin="bench.scenarios.mapreduce",
                          state="ready", row_count=rows,
                          columns=["id", "name", "email", "age", "country", "plan", "amount"])
        session.add(dataset)
        session.flush()
        dataset_id = dataset.id
        mark = "?" if tw.store.engine.dialect.paramstyle == "qmark" else "%s"
        insert = (f"INSERT INTO dataset_items (dataset_id, item_index, data) "  # noqa: S608
                  f"VALUES ({mark}, {mark}, {mark})")
        batch: list[tuple[int, int, str]] = []
        conn = session.connection()
        for index, item in enumerate(people(rows)):
            batch.append((dataset_id, index, json.dumps(item)))
            if len(batch) >= chunk:
                conn.exec_driver_sql(insert, batch)
                batch = []
        if batch:
            conn.exec_driver_sql(insert, batch)


# -- peak memory of the worker's pool processes --------------------------------------------


def _hwm_kb(pid: int) -> int:
    """The process's peak resident set (VmHWM), kB; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Samples VmHWM of every child of the worker's root processes (a recycled child's
    peak is kept by pid), every ``interval`` seconds, until stopped."""

    def __init__(self, workers: Workers, interval: float = 0.2) -> None:
        self.roots = [psutil.Process(p.pid) for p in workers.procs]
        self.interval = interval
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def sample(self) -> None:
        for root in self.roots:
            try:
                children = root.children(recursive=True)
            except psutil.NoSuchProcess:
                continue
            for child in children:
                kb = _hwm_kb(child.pid)
                if kb:
                    self.peaks[child.pid] = max(self.peaks.get(child.pid, 0), kb)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> int:
        """The highest peak of any pool process, kB."""
        self._stop.set()
        self._thread.join()
        self.sample()
        return max(self.peaks.values(), default=0)


# -- the two sides -------------------------------------------------------------------------


def run_jobs(tw: Taskworks, dataset: str, timeout: float) -> tuple[float, dict[str, Any]]:
    """Start both jobs, wait until both runs are over; (wall seconds, results)."""
    runs = tw.workflows.queries
    kwargs = {"partition_size": PARTITION_SIZE} if PARTITION_SIZE else {}
    t0 = time.perf_counter()
    ids = {function: tw.jobs.start(dataset, function, params, **kwargs)
           for function, params in JOBS}
    pending = set(ids.values())
    deadline = time.monotonic() + timeout
    while pending:
        for job_id in list(pending):
            if runs.run_row(job_id).finished_at is not None:
                pending.discard(job_id)
        if time.monotonic() > deadline:
            raise TimeoutError(f"map-reduce jobs not done after {timeout}s")
        time.sleep(0.025)  # a poll is a store read: keep the harness off the cores
    wall = time.perf_counter() - t0
    results = {}
    for function, job_id in ids.items():
        status = tw.jobs.status(job_id)
        if status.state != "completed":
            failed = [p.error for p in status.failed][:3]
            raise RuntimeError(f"{function} job {status.state}: {status.error} {failed}")
        results[function] = tw.jobs.result(job_id)
    return wall, results


def run_plain(env: BenchEnv, dataset: str) -> dict[str, Any]:
    """The plain side in a fresh interpreter; its own figures, as JSON on stdout."""
    done = subprocess.run(
        python("-m", "bench.scenarios.mapreduce", "plain", _database_url(env), dataset),
        env=env.worker_env(), capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"plain side failed:\n{done.stderr[-3000:]}")
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def plain_main(database_url: str, dataset: str) -> None:
    from taskworks.mapreduce import run_local
    from taskworks.store.engine import Store

    store = Store(database_url)
    count = _row_count(store, dataset)  # also connects: outside the clock
    cpu0 = _cpu_self()
    t0 = time.perf_counter()
    results = {}
    for function, params in JOBS:
        results[function] = run_local(store, dataset, function, params,
                                      partition_size=max(count, 1)).result
    wall = time.perf_counter() - t0
    print(json.dumps({"wall": wall, "cpu": _cpu_self() - cpu0, "results": results,
                      "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _row_count(store: Any, dataset: str) -> int:
    from taskworks.mapreduce import Datasets

    return Datasets(store).get(dataset).row_count


def _database_url(env: BenchEnv) -> str:
    return f"sqlite:///{env.dir / 'taskworks.db'}"


def _same(a: Any, b: Any) -> bool:
    """Equal results, floats within rounding (the sums are added in another order)."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) \
            and abs(a - b) <= 1e-6 * max(1.0, abs(a), abs(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# -- the measurement -----------------------------------------------------------------------


def measure(env: BenchEnv, rows: int, runs: int) -> dict[str, dict[str, list[float]]]:
    """Per (side, rows): wall, rows_per_s and peak_mib samples, at ``rows`` and a tenth."""
    from taskworks.store.migrate import upgrade

    tw = build(broker_url=env.url, data_dir=env.dir / "data", database_url=_database_url(env))
    upgrade(tw.store)
    tenth = max(rows // 10, 1)
    sizes = [rows, tenth]
    for n in sizes:
        generate(tw, f"bench_people_{n}", n)
    generate(tw, "bench_people_warmup", 200)
    out: dict[str, dict[str, list[float]]] = {}
    for n in sizes:
        dataset = f"bench_people_{n}"
        # fresh workers per size: their peak memory is this size's alone
        workers = Workers("mapreduce", [python(
            "-m", "taskworks", "worker", "--app", "bench.scenarios.mapreduce:tw",
            "--group", "cpu")], env.worker_env())
        try:
            run_jobs(tw, "bench_people_warmup", timeout=120)  # readiness and imports
            peak = PeakMemory(workers)
            tw_fig = out.setdefault(f"{TASKWORKS_SIDE}|{n}", {})
            plain_fig = out.setdefault(f"{PLAIN_SIDE}|{n}", {})
            for _ in range(runs if n == rows else 1):
                cpu0 = workers.cpu_seconds()
                wall, results = run_jobs(tw, dataset, timeout=max(600, n / 200))
                time.sleep(0.3)  # the last journal and result writes
                cpu = workers.cpu_seconds() - cpu0
                workers.check_alive()
                plain = run_plain(env, dataset)
                for function, _params in JOBS:
                    if not _same(results[function], plain["results"][function]):
                        raise AssertionError(f"{function}: the job's result differs from "
                                             f"the plain process's")
                for figure in (tw_fig, plain_fig):
                    figure.setdefault("rows", []).append(n)
                tw_fig.setdefault("wall", []).append(wall)
                tw_fig.setdefault("rows_per_s", []).append(n / wall)
                tw_fig.setdefault("cpu_us_per_row", []).append(cpu / n * 1e6)
                plain_fig.setdefault("wall", []).append(plain["wall"])
                plain_fig.setdefault("rows_per_s", []).append(n / plain["wall"])
                plain_fig.setdefault("cpu_us_per_row", []).append(plain["cpu"] / n * 1e6)
                plain_fig.setdefault("peak_mib", []).append(plain["maxrss_kb"] / 1024)
            tw_fig["peak_mib"] = [peak.stop() / 1024]
        finally:
            workers.stop()
    return out


def run(env: BenchEnv, sizes: Sizes) -> list[Figure]:
    env.reset()
    rows = rows_for(sizes)
    found = measure(env, rows, sizes.runs)
    figures = []
    for key, samples in found.items():
        side, n = key.split("|")
        name = side if int(n) == rows else side + TENTH
        figure = Figure("mapreduce", name)
        for metric, values in samples.items():
            for value in values:
                figure.add(**{metric: value})
        figures.append(figure)
    return figures


register(Scenario(
    name="mapreduce",
    title="Map-reduce: validation plus aggregation of 1,000,000 rows (at full size), 2 "
          "worker processes against one plain Python process",
    measures="Wall seconds for a validation job and an aggregation job (started together) "
             "on one cpu-group worker (prefork, 2 processes), and for the same two "
             "functions run one after the other by run_local in one plain Python process, "
             "both reading the same SQLite store; results compared. Peak memory: the "
             "highest VmHWM of the worker's pool processes, ru_maxrss of the plain "
             "process; also at a tenth of the rows, on fresh processes.",
    columns=[Column("rows", "rows", "{:,.0f}"), Column("wall", "wall s", "{:.2f}"),
             Column("rows_per_s", "rows/s", "{:,.0f}"),
             Column("cpu_us_per_row", "CPU µs / row", "{:.1f}"),
             Column("peak_mib", "peak RSS MiB (per process)", "{:.0f}")],
    ratios=[
        Ratio("speedup: taskworks (2 processes) / one plain process", "mapreduce",
              "rows_per_s", TASKWORKS_SIDE, PLAIN_SIDE, 1.6),
        # load-independent: what the speedup would be on 2 idle cores at full utilisation
        # is 2 / this, so 1.25 is the most CPU the distribution may add for a 1.6 speedup
        Ratio("CPU per row: taskworks / plain (lower is better)", "mapreduce",
              "cpu_us_per_row", TASKWORKS_SIDE, PLAIN_SIDE, 1.25, higher_is_better=False),
        Ratio("worker peak memory, full size / a tenth of it (lower is better)",
              "mapreduce", "peak_mib", TASKWORKS_SIDE, TASKWORKS_SIDE + TENTH, 1.2,
              higher_is_better=False),
    ],
    run=run,
    chart_metric="rows_per_s",
    chart_label="map-reduce: rows/s (higher is better)",
))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "plain":
        plain_main(sys.argv[2], sys.argv[3])
        return
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else ROWS["small"]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    with BenchEnv() as env:
        found = measure(env, rows, runs)
    for key, samples in found.items():
        print(f"{key:45s} " + "  ".join(
            f"{metric}=" + ",".join(f"{v:.3g}" for v in values)
            for metric, values in samples.items()))


if __name__ == "__main__":
    main()
