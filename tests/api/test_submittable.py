"""POST /api/tasks submits only what ``api.submittable_tasks`` allows: by default every
task of the app's own and the health check, no other built-in (db_operation, http_call,
notify.failure, the workflow step, Celery's chain/group). Real uvicorn servers, a real
worker, real Valkey."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.support.postgres import free_port
from tests.support.wait import wait_for
from tests.support.workers import ROOT

#: a state-changing request from a script, as the API's cross-site guard expects it
POST_HEADERS = {"X-Taskworks": "1", "X-Taskworks-Request": "1"}

REFUSED = ["taskworks.db_operation", "taskworks.http_call", "taskworks.notify.failure",
           "taskworks.workflow_step", "taskworks.mapreduce.map", "celery.chain"]


def _backlog(api: httpx.Client) -> int:
    return sum(q["backlog"] for q in api.get("/api/queues").json())


@pytest.mark.parametrize("name", REFUSED)
def test_built_ins_are_refused_by_default(api: httpx.Client, name: str) -> None:
    response = api.post("/api/tasks", headers=POST_HEADERS, json={
        "name": name, "args": ["DROP TABLE taskworks_journal"] if "db" in name else []})
    assert response.status_code == 403, response.text
    [detail] = response.json()["detail"]
    assert detail["type"] == "not_submittable"
    assert detail["field"] == "task"
    assert detail["value"] == name
    assert detail["setting"] == "api.submittable_tasks"
    assert "api.submittable_tasks" in detail["msg"]
    assert "TASKWORKS_API__SUBMITTABLE_TASKS" in detail["msg"]
    assert _backlog(api) == 0  # nothing was sent


def test_the_apps_own_tasks_and_the_health_check_are_accepted(api: httpx.Client) -> None:
    for name, args in (("tests.echo", [1]), ("taskworks.monitoring.health_check", [])):
        response = api.post("/api/tasks", headers=POST_HEADERS,
                            json={"name": name, "args": args})
        assert response.status_code == 201, response.text
    assert _backlog(api) == 2


class _Answering:
    """A local HTTP server answering every GET with JSON and counting the hits."""

    def __init__(self) -> None:
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                raw = json.dumps({"path": self.path}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_workflow_step_naming_a_refused_task_is_refused_at_registration(
        api: httpx.Client) -> None:
    """A step runs its task with the definition's parameters: without this, a workflow
    would be a way round the list."""
    definition = {"name": "sneaky", "steps": [
        {"name": "ok", "task": "tests.echo", "params": {"i": 1}},
        {"name": "sql", "task": "taskworks.db_operation", "depends_on": ["ok"],
         "params": {"sql": "DELETE FROM journal"}}]}
    response = api.post("/api/workflows", headers=POST_HEADERS, json=definition)
    assert response.status_code == 403, response.text
    [entry] = response.json()["detail"]
    assert (entry["field"], entry["value"]) == ("steps[1] (sql).task", "taskworks.db_operation")
    assert api.get("/api/workflows/sneaky").status_code == 404  # nothing registered


@pytest.fixture
def listed_api(tw: Any) -> Iterator[str]:
    """``taskworks api`` in its own process, its settings listing http_call."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TASKWORKS_API_TOKEN"}
    env["TASKWORKS_API__SUBMITTABLE_TASKS"] = '["tests.*", "taskworks.http_call"]'
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskworks", "api", "--app", "tests.apps.sample:tw",
         "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/api/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(lambda: proc.poll() is not None or up(), timeout=30, what="taskworks api")
        assert proc.poll() is None, proc.communicate()[0]
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)


def test_a_built_in_listed_in_the_setting_is_accepted_and_runs(
        listed_api: str, start_worker: Callable[..., Any]) -> None:
    start_worker(env={"TASKWORKS_HTTP_CALL__ALLOW_PRIVATE_NETWORKS": "true"})
    target = _Answering()
    try:
        with httpx.Client(base_url=listed_api, headers=POST_HEADERS, timeout=30) as api:
            response = api.post("/api/tasks", json={"name": "taskworks.http_call",
                                                    "args": [f"{target.url}/ping"]})
            assert response.status_code == 201, response.text
            task_id = response.json()["id"]
            done = wait_for(lambda: (r := api.get(f"/api/tasks/{task_id}/result").json())
                            ["ready"] and r, timeout=30, what="the http_call")
            assert done["state"] == "SUCCESS", done
            assert done["result"]["json"] == {"path": "/ping"}
            assert target.hits == 1
            # the list replaces the default: what it does not name stays refused
            assert api.post("/api/tasks", json={"name": "tests.echo", "args": [1]}
                            ).status_code == 201
            for name in ("taskworks.db_operation", "tasks.cpu_intensive.crunch"):
                refused = api.post("/api/tasks", json={"name": name})
                assert refused.status_code == 403, refused.text
                assert refused.json()["detail"][0]["value"] == name
    finally:
        target.close()
