"""The control plane and the autoscaler, as the demo's last scenario.

Serves the REST API on a free loopback port for a moment, reads it the way a user or a
Prometheus server would, and shows what the autoscaler decided during the demo.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from taskworks.api import make_server
from taskworks.scaling.record import current_status, recent_decisions


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def control_scenario(tw: Any, console: Console) -> None:
    port = _free_port()
    server = make_server(tw, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        health = httpx.get(f"{base}/api/health", timeout=10).json()
        queues = httpx.get(f"{base}/api/queues", timeout=10).json()
        metrics = httpx.get(f"{base}/metrics", timeout=30).text
        families = sorted(f.name for f in text_string_to_metric_families(metrics)
                          if f.name.startswith("taskworks_"))
        console.print(f"API on {base} (dashboard at {base}/): health {health.get('status')}; "
                      f"queues " + ", ".join(f"{q['name']}={q.get('backlog', '?')}"
                                             for q in queues))
        console.print(f"/metrics: {len(families)} taskworks families, e.g. "
                      f"{', '.join(families[:6])}, ...")
    finally:
        server.should_exit = True
        thread.join(10)

    status = current_status(redis.Redis.from_url(tw.settings.effective_broker_url))
    if status is not None:
        console.print(f"autoscaler: {status['total']} worker processes, "
                      f"{status['dead']} crashed; per group "
                      + ", ".join(f"{name} {g['active']}" for name, g in status["groups"].items()))
    decisions = recent_decisions(tw.store, 8)
    table = Table(title="Autoscaler decisions during the demo (taskworks autoscale status)")
    for column in ("group", "change", "backlog", "reason"):
        table.add_column(column)
    for row in reversed(decisions):
        table.add_row(row["group"], f"{row['previous']} -> {row['desired']}",
                      str(row["backlog"]), row["reason"])
    console.print(table if decisions else "autoscaler: no change was needed during the demo")
