"""``taskworks workflow ...`` in a subprocess, against a real worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.workers import ROOT
from tests.workflows.conftest import unique

APP = "tests.apps.sample:tw"


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run([sys.executable, "-m", "taskworks", "workflow", *args, "--app", APP],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_register_run_watch_status_list(tmp_path: Path, tw: Any, worker: Any) -> None:
    name = unique("cli")
    path = tmp_path / "wf.yaml"
    path.write_text(f"""
name: {name}
steps:
  - {{name: a, task: wf.add, params: {{amount: 1}}}}
  - {{name: b, task: wf.add, params: {{amount: 2}}, depends_on: [a]}}
""")
    done = cli("register", str(path))
    assert done.returncode == 0, done.stderr
    assert f"registered {name} v1 (2 steps)" in done.stdout

    done = cli("run", name, "--input", '{"x": 3}', "--watch")
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.splitlines()[0].strip()
    assert "SUCCEEDED" in done.stdout

    done = cli("status", run_id, "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["state"] == "SUCCEEDED"
    assert {n: s["result"] for n, s in body["steps"].items()} == {"a": 4, "b": 6}

    listed = cli("list", "--workflow", name)
    assert run_id in listed.stdout
    assert name in listed.stdout

    again = cli("retry", run_id)
    assert again.returncode == 2
    assert "a FAILED or CANCELLED run to retry (it is SUCCEEDED)" in again.stderr


def test_bad_input_exits_2_with_one_clear_message(tmp_path: Path, tw: Any) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nsteps:\n  - {name: a, task: nope}\n"
                    "  - {name: b, task: wf.add, depends_on: [zz]}\n")
    done = cli("register", str(path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "steps[0] (a).task: unknown task 'nope'" in done.stderr
    assert "steps[1] (b).depends_on: unknown step 'zz'" in done.stderr

    for args, expected in [
        (("run", "never-registered"), "the name of a registered workflow"),
        (("run", "x", "--input", "{oops"), "--input: got '{oops', expected JSON"),
        (("status", "no-such-run"), "run_id: got 'no-such-run'"),
    ]:
        done = cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert expected in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_register_refuses_what_would_overflow_later(tmp_path: Path, tw: Any) -> None:
    """The same bounds as the API's (tests/api/test_workflows.py): the library owns them."""
    path = tmp_path / "big.yaml"
    name = unique("big")
    path.write_text(f"name: {name}\ntimeout: 1.0e+20\nsteps:\n  - {{name: a, task: wf.add}}\n")
    done = cli("register", str(path))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "timeout: got 1e+20, expected seconds, at most 315360000" in done.stderr
    assert name not in {n for n, _, _ in tw.workflows.definitions()}
