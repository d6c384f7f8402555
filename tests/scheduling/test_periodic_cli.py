"""``taskworks periodic list|pause|resume`` in a subprocess: output, Redis, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import redis

from taskworks import keys
from taskworks.scheduling.firing import format_time
from tests.support.workers import ROOT

APP = "tests.apps.sample:tw"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run([sys.executable, "-m", "taskworks", "periodic", *args, "--app", APP],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_pause_list_and_resume(redis_client: redis.Redis) -> None:
    redis_client.hset(keys.BEAT_LAST_FIRE, "health-check", format_time(1_000_000.0))
    paused = run("pause", "health-check")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.strip() == "periodic entry health-check: paused"
    assert redis_client.sismember(keys.BEAT_PAUSED, "health-check")

    listed = run("list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == {"cleanup-expired-data", "daily-report", "health-check",
                         "taskworks-workflows-sweep"}
    assert rows["health-check"]["paused"] is True
    assert rows["health-check"]["next_fire"] is None
    assert rows["daily-report"] | {"next_fire": None} == {
        "name": "daily-report", "task": "taskworks.reports.daily", "schedule": "cron 0 2 * * *",
        "timezone": "UTC", "missed": "skip", "missed_window": 3600.0, "paused": False,
        "last_fire": None, "next_fire": None}

    table = run("list")
    assert table.returncode == 0, table.stderr
    line = next(line for line in table.stdout.splitlines() if "health-check" in line)
    assert "every 300s" in line
    assert "paused" in line
    assert "1970-01-12 13:46:40 UTC" in line  # the last fire, in the entry's zone

    resumed = run("resume", "health-check")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("periodic entry health-check: next ")
    assert not redis_client.sismember(keys.BEAT_PAUSED, "health-check")
    # what fell due while paused is skipped: the last fire moved to the latest due time
    last = float(redis_client.hget(keys.BEAT_LAST_FIRE, "health-check") or 0)
    assert last > 1_000_000.0
    assert (last - 1_000_000.0) % 300 == 0


def test_an_unknown_entry_is_one_line_and_exit_2(redis_client: redis.Redis) -> None:
    done = run("pause", "no-such-entry")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: NAME: got 'no-such-entry', expected the name of a periodic entry "
        "(cleanup-expired-data, daily-report, health-check, taskworks-workflows-sweep)"]
    assert not redis_client.exists(keys.BEAT_PAUSED)
