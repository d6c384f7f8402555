"""``taskworks dataset`` and ``taskworks job`` in a subprocess: exit codes and messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taskworks.store.engine import Store
from tests.mapreduce.conftest import load
from tests.mapreduce.test_datasets import add_job
from tests.support.workers import ROOT, WorkerProcess


def run(cwd: Path, db: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "TASKWORKS_DATABASE_URL": db}
    return subprocess.run([sys.executable, "-m", "taskworks", "dataset", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60)


def test_dataset_commands(tmp_path: Path, db: str) -> None:
    (tmp_path / "people.csv").write_text("id,name\n1,ann\n2,bob\n3,cy\n")
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n{"id": \n{"id": 3}\n42\n')

    done = run(tmp_path, db, "import", "people.csv", "--name", "people")
    assert done.returncode == 0, done.stderr
    assert "dataset 'people' (id 1): 3 items, columns id, name" in done.stdout

    done = run(tmp_path, db, "import", "bad.jsonl", "--name", "bad")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "2 bad row(s), nothing was imported" in done.stderr
    assert "line 2: not JSON" in done.stderr
    assert "line 4: a JSON int" in done.stderr

    done = run(tmp_path, db, "list", "--json")
    assert done.returncode == 0, done.stderr
    listed = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(d["name"], d["row_count"], d["source"]) for d in listed] == [
        ("people", 3, "csv")]  # the failed import left nothing

    done = run(tmp_path, db, "show", "people", "--head", "2")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["columns"] == ["id", "name"]
    assert shown["head"] == [{"item_index": 0, "data": {"id": 1, "name": "ann"}},
                             {"item_index": 1, "data": {"id": 2, "name": "bob"}}]

    done = run(tmp_path, db, "show", "nope")
    assert done.returncode == 2
    assert "dataset: got 'nope', expected the name of a dataset" in done.stderr

    done = run(tmp_path, db, "delete", "people", "--yes")
    assert done.returncode == 0, done.stderr
    assert "dataset 'people' deleted (3 items)" in done.stdout
    assert run(tmp_path, db, "show", "people").returncode == 2


def test_a_dataset_in_use_is_not_deleted(tmp_path: Path, db: str) -> None:
    """The library's refusal, through the command line: one line, exit 2."""
    store = Store(db)
    try:
        info = load(store, [{"v": 1}, {"v": 2}], name="busy")
        add_job(store, "job-1", info.id)
    finally:
        store.dispose()
    done = run(tmp_path, db, "delete", "busy", "--yes")
    assert done.returncode == 2, done.stdout
    assert done.stderr.strip().splitlines() == [
        "error: name: got 'busy', expected a dataset no running job uses (job job-1 does: "
        "cancel it first)"]
    assert json.loads(run(tmp_path, db, "show", "busy").stdout)["row_count"] == 2


def test_import_errors_name_the_flags(tmp_path: Path, db: str) -> None:
    """The library names parameters; this command line names its flags."""
    (tmp_path / "a.txt").write_text("a\n1\n")
    done = run(tmp_path, db, "import", "a.txt", "--name", "a")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --format: got '.txt', expected csv or jsonl")
    done = run(tmp_path, db, "import", "a.txt", "--name", "a", "--format", "csv")
    assert done.returncode == 0, done.stderr
    done = run(tmp_path, db, "import", "a.txt", "--name", "a", "--format", "csv")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --name: got 'a', expected a name no dataset has")
    done = run(tmp_path, db, "register", "--name", "b")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: --table/--query: got None, expected exactly one")
    done = run(tmp_path, db, "register", "--name", "b", "--table", "missing")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --table: got 'missing', expected an existing table"


def test_store_not_migrated(tmp_path: Path) -> None:
    done = run(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}", "list")
    assert done.returncode == 2
    assert "run `taskworks db upgrade`" in done.stderr


def run_job(*args: str) -> subprocess.CompletedProcess[str]:
    """``taskworks job ARGS`` on the sample app and the session's store and broker."""
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run([sys.executable, "-m", "taskworks", "job", *args, "--app",
                           "tests.apps.sample:tw"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_job_commands(tw: Any, start_worker: Callable[..., WorkerProcess],
                      tmp_path: Path) -> None:
    start_worker(["cpu_intensive"], pool="threads", concurrency=2)
    info = load(tw.store, [{"g": "ab"[i % 2], "v": i} for i in range(30)])
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"group_by": ["g"], "aggregate_fields": {"v": ["sum"]}}))

    done = run_job("run", "--dataset", info.name, "--function", "aggregation",
                   "--params", f"@{params}", "--partition-size", "7", "--watch")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.splitlines()[0].strip()
    assert "completed  partitions 5/5" in done.stdout

    done = run_job("result", job_id, "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["g,rows,v_sum", "a,15,210", "b,15,225"]
    done = run_job("status", job_id)
    assert done.returncode == 0, done.stderr
    assert f"job {job_id}  aggregation on {info.name}  completed  partitions 5/5" \
        in done.stdout
    done = run_job("status", job_id, "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert (status["state"], status["partitions_done"], status["reduce"]) == (
        "completed", 5, "SUCCEEDED")

    done = run_job("run", "--dataset", info.name, "--function", "transformation",
                   "--params", '{"calculated_fields": {"x": "__import__(\'os\')"}}')
    assert done.returncode == 2
    assert "params.calculated_fields.x" in done.stderr
    assert "calling '__import__' is not allowed" in done.stderr
    done = run_job("run", "--dataset", info.name, "--function", "validation",
                   "--params", '{"required_fields": ["v"]}', "--partition-size", "0")
    assert done.returncode == 2
    assert "partition_size: got 0, expected an integer >= 1" in done.stderr
    done = run_job("retry", job_id)
    assert done.returncode == 2
    assert "a failed, cancelled or partial job (it is completed)" in done.stderr
    done = run_job("run", "--dataset", info.name, "--function", "validation",
                   "--on-partition-failure", "ignore")
    assert done.returncode == 2
    assert "--on-partition-failure: got 'ignore', expected fail or reduce" in done.stderr
