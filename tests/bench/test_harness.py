"""The benchmark harness runs every scenario at a tiny size, so it cannot rot.

No timing is asserted: benchmarks are not tests. What is asserted is that the report is
written and that every side of every scenario produced every figure.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core import SCENARIOS
from bench.scenarios import MODULES, load_all
from tests.support.workers import ROOT


@pytest.mark.timeout(600)  # every scenario starts real worker processes for each side
def test_every_scenario_runs_once_at_tiny_size(tmp_path: Path) -> None:
    # a child process: the harness starts its own Valkey and its own worker processes
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKWORKS_", "BENCH_"))}
    scratch = tmp_path / "tmp"  # its TMPDIR: what the run leaves there is seen below
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "tiny", "--runs", "1", "--out", str(tmp_path)],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch)},
        capture_output=True, text=True, timeout=560,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # the run's data dir (AOF, SQLite stores) and the workers' logs are deleted
    assert sorted(p.name for p in scratch.iterdir()
                  if p.name.startswith(("tw-bench-", "bench-"))) == []

    load_all()
    report = (tmp_path / "latest.md").read_text()
    raw = json.loads((tmp_path / "latest.raw.json").read_text())
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert raw["machine"]["cores"]
    assert raw["machine"]["CPU"]
    by_scenario: dict[str, list[dict]] = {}
    for figure in raw["figures"]:
        by_scenario.setdefault(figure["scenario"], []).append(figure)
    assert set(by_scenario) == set(MODULES) == set(SCENARIOS)
    for name, scenario in SCENARIOS.items():
        sides = {f["side"] for f in by_scenario[name]}
        for ratio in scenario.ratios:  # every side a ratio needs was measured
            assert {ratio.numerator, ratio.denominator} <= sides, ratio.name
        for figure in by_scenario[name]:
            for column in scenario.columns:
                values = figure["samples"].get(column.metric)
                assert values, (name, figure["side"], column)
                # finite, not >= 0: a difference of two timings may be negative by noise
                assert all(math.isfinite(v) for v in values), (name, figure["side"], column)
            assert f"| {figure['side']} |" in report
        assert f"## {scenario.title}" in report
    for ratio in (r for s in SCENARIOS.values() for r in s.ratios):
        assert f"| {ratio.name} | n/a" not in report, ratio.name
