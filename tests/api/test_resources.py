"""/api/queues, /api/workers, /api/health, /api/autoscale, /api/breakers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import redis

from tests.support.wait import wait_for


def test_queue_depth_counts_waiting_messages(api: httpx.Client) -> None:
    for _ in range(3):
        api.post("/api/tasks", json={"name": "tests.echo", "args": [1], "queue": "priority"})
    depths = {q["name"]: q for q in api.get("/api/queues").json()}
    assert set(depths) == {"default", "cpu_intensive", "io_intensive", "priority", "scheduled"}
    assert depths["priority"] == {"name": "priority", "waiting": 3, "unacked": 0, "backlog": 3}
    assert depths["default"]["backlog"] == 0


def test_workers_lists_the_running_worker(api: httpx.Client,
                                          start_worker: Callable[..., Any]) -> None:
    worker = start_worker(["default"])
    found = api.get("/api/workers", params={"timeout": 1}).json()
    hosts = {w["hostname"]: w for w in found["workers"]}
    assert worker.hostname in hosts
    assert hosts[worker.hostname]["pool"]["implementation"].endswith("solo:TaskPool")
    assert api.get("/api/workers", params={"timeout": 60}).status_code == 422


def test_health_needs_no_token(api_server: Any) -> None:
    with api_server.client(token=None) as anonymous:
        response = anonymous.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "broker": True, "store": True, "errors": {}}


def test_autoscale_status_decisions_and_replicas(api: httpx.Client) -> None:
    body = api.get("/api/autoscale").json()
    assert body["running"] is False
    assert body["status"] is None
    assert isinstance(body["decisions"], list)
    for _ in range(5):
        api.post("/api/tasks", json={"name": "tests.echo", "args": [1], "queue": "priority"})
    replicas = api.get("/api/autoscale/replicas").json()
    assert set(replicas) == {"general", "cpu", "priority"}
    priority = replicas["priority"]
    assert priority["backlog"] == 5
    assert priority["queues"] == {"priority": 5}
    assert priority["min"] <= priority["desired"] <= priority["max"]


def test_breakers_list_show_and_reset(api: httpx.Client, redis_client: redis.Redis,
                                      start_worker: Callable[..., Any]) -> None:
    start_worker(["default"])
    redis_client.set("brk-api:fail", 1)
    for _ in range(2):  # failure_threshold=2 (tests/apps/sample.py)
        api.post("/api/tasks", json={"name": "tests.guarded", "args": ["brk-api"]})
    wait_for(lambda: api.get("/api/breakers/tests.guarded").json()["state"] == "open",
             what="the breaker to open")
    listed = {b["name"]: b for b in api.get("/api/breakers").json()}
    assert listed["tests.guarded"]["state"] == "open"
    assert listed["tests.guarded"]["failures_total"] >= 2
    reset = api.post("/api/breakers/tests.guarded/reset", json={"reason": "fixed upstream"})
    assert reset.status_code == 200, reset.text
    assert reset.json()["state"] == "closed"
    assert reset.json()["recent"][0]["reason"] == "fixed upstream"


def test_unknown_breaker_is_404_and_a_bad_name_422(api: httpx.Client) -> None:
    assert api.get("/api/breakers/no.such.breaker").status_code == 404
    assert api.post("/api/breakers/no.such.breaker/reset").status_code == 404
    assert api.get("/api/breakers/bad%20name").status_code == 422


def test_a_broker_that_is_down_is_a_503_not_a_500(tmp_path: Any) -> None:
    from taskworks import Taskworks
    from taskworks.settings import load_settings
    from tests.api.server import ApiServer
    from tests.support.postgres import free_port

    # nothing listens on this port: every broker call is refused
    down = Taskworks(settings=load_settings(broker_url=f"redis://127.0.0.1:{free_port()}/0",
                                            database_url=f"sqlite:///{tmp_path / 's.db'}"))
    server = ApiServer(down).start()
    try:
        with server.client(token=None) as client:
            health = client.get("/api/health")
            assert health.status_code == 503
            assert health.json()["broker"] is False
            queues = client.get("/api/queues")
            assert queues.status_code == 503
            assert "broker is unavailable" in queues.json()["detail"]
    finally:
        server.stop()
