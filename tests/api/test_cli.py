"""``taskworks api``: serves on loopback without a token and answers until stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx

from tests.support.postgres import free_port
from tests.support.wait import wait_for
from tests.support.workers import ROOT


def _health(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_taskworks_api_serves_until_interrupted() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TASKWORKS_API_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskworks", "api", "--app", "tests.apps.sample:tw",
         "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: proc.poll() is not None or _health(url), timeout=30,
                 what="taskworks api to answer")
        assert proc.poll() is None
        assert httpx.get(f"{url}/api/queues", timeout=5).status_code == 200  # no token
        assert httpx.get(f"{url}/docs", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    # a graceful shutdown; uvicorn then re-raises the SIGINT (exit 130, like any Ctrl-C)
    assert "Finished server process" in output
    assert proc.returncode in (0, 130, -signal.SIGINT), output
    assert f"http://127.0.0.1:{port}" in output
    assert "loopback only" in output
