"""``taskworks up`` runs the whole stack and Ctrl-C stops all of it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from taskworks import Taskworks, load_settings
from taskworks.broker.embedded import EmbeddedBroker
from tests.support.postgres import free_port
from tests.support.wait import wait_for
from tests.support.workers import ROOT


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    children = [int(p) for p in out.split()]
    return children + [d for c in children for d in _descendants(c)]


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=2)
    except httpx.TransportError:
        return None


def test_up_serves_every_group_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKWORKS_")}
    api_port = free_port()
    env.update({"TASKWORKS_EMBEDDED_PORT": str(port), "TASKWORKS_DATA_DIR": str(tmp_path),
                "TASKWORKS_API__PORT": str(api_port)})
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen([sys.executable, "-m", "taskworks", "up", "--no-beat"], cwd=ROOT,
                          env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        tw = Taskworks(settings=load_settings(
            broker_url=url, database_url=f"sqlite:///{tmp_path / 'taskworks.db'}"))
        # one task per worker group, each on a queue only that group consumes
        results = {q: tw.submit("taskworks.diagnostics.where", [q], queue=q)
                   for q in ("default", "cpu_intensive", "priority")}
        # supervised workers are named <group>-<n>@<host>
        hosts = {q: r.get(timeout=60)["hostname"].split("@")[0].rsplit("-", 1)[0]
                 for q, r in results.items()}
        assert hosts == {"default": "general", "cpu_intensive": "cpu", "priority": "priority"}
        assert (tmp_path / "taskworks.db").exists()  # migrations ran
        health = wait_for(lambda: _get(f"http://127.0.0.1:{api_port}/api/health"),
                          timeout=30, what="the API")
        assert health.status_code == 200

        children = _descendants(up.pid)
        assert len(children) >= 4  # broker + three workers (+ the cpu pool)
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0
        for pid in children:
            wait_for(lambda pid=pid: not Path(f"/proc/{pid}").exists()
                     or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2],
                     timeout=10, what=f"process {pid} to exit")
        assert EmbeddedBroker(tmp_path, port=port).running() is None
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    finally:
        if up.poll() is None:
            up.kill()
        log.close()
