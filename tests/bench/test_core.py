"""``BenchEnv`` deletes its temporary directory (the AOF, the SQLite store) on every way
out, and stops its Valkey first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from bench.core import BenchEnv
from tests.support.workers import ROOT


def test_the_directory_and_valkey_are_gone_after_the_block() -> None:
    with BenchEnv() as env:
        (env.dir / "taskworks.db").write_bytes(b"x" * 4096)  # what a scenario leaves
        env.redis.set("k", "v")
        assert env.redis.get("k") == b"v"
        pid = env.server.pid
        directory = env.dir
        assert (directory / "data").is_dir()  # the AOF is in there
    assert not directory.exists()
    assert not psutil.pid_exists(pid)  # stopped and reaped before the delete


def _fail_inside(env: BenchEnv) -> None:
    with env:
        raise RuntimeError("a scenario broke")


def test_the_directory_is_gone_when_the_block_fails() -> None:
    env = BenchEnv()
    with pytest.raises(RuntimeError, match="a scenario broke"):
        _fail_inside(env)
    assert not env.dir.exists()


def test_close_twice_is_harmless() -> None:
    env = BenchEnv()
    env.close()
    env.close()
    assert not env.dir.exists()


def test_a_run_that_exits_early_leaves_nothing_in_tmp(tmp_path: Path) -> None:
    # the harness's own way out before any scenario: an unknown name (exit status 1)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKWORKS_", "BENCH_"))}
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "tiny", "--only", "no-such-scenario",
         "--out", str(tmp_path / "out")],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch)},
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "unknown scenario 'no-such-scenario'" in done.stderr
    assert sorted(p.name for p in scratch.iterdir() if p.name.startswith("tw-bench-")) == []
