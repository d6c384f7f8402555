"""``taskworks breaker list|show|reset`` in a subprocess: output and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import redis

from taskworks.resilience.breaker import BreakerState
from tests.support.workers import ROOT

APP = "tests.apps.sample:tw"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb"}
    return subprocess.run([sys.executable, "-m", "taskworks", "breaker", *args, "--app", APP],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def opened(tw: Any, redis_client: redis.Redis) -> Any:
    breaker = tw.breakers.get("tests.guarded")
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker.call(_down)
    return breaker


def _down() -> None:
    raise ConnectionError("payments timed out")


def test_list_shows_state_and_registered_breakers(opened: Any) -> None:
    done = run("list", "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["tests.guarded"]["state"] == "open"
    assert rows["tests.guarded"]["failures_total"] == 2
    assert rows["tests.guarded_long"]["state"] == "closed"  # registered, never used yet
    table = run("list")
    assert table.returncode == 0, table.stderr
    assert "tests.guarded" in table.stdout
    assert "open" in table.stdout


def test_show_prints_counters_and_recent_transitions(opened: Any) -> None:
    done = run("show", "tests.guarded")
    assert done.returncode == 0, done.stderr
    assert "tests.guarded: open" in done.stdout
    assert "ConnectionError: payments timed out" in done.stdout
    assert "closed" in done.stdout
    assert "2 consecutive failures" in done.stdout
    as_json = json.loads(run("show", "tests.guarded", "--json").stdout)
    assert [(t["from"], t["to"]) for t in as_json["recent"]] == [("closed", "open")]


def test_reset_closes_and_is_journaled(opened: Any) -> None:
    done = run("reset", "tests.guarded")
    assert done.returncode == 0, done.stderr
    assert "reset: closed" in done.stdout
    status = opened.status(recent=1)
    assert status.state is BreakerState.CLOSED
    assert status.recent[0].reason == "reset from the command line"


@pytest.mark.parametrize("command", ["show", "reset"])
def test_unknown_name_exits_2_with_a_clear_message(command: str, redis_client: Any) -> None:
    done = run(command, "no.such.breaker")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "breaker: got 'no.such.breaker', expected the name of a known breaker" in done.stderr
