"""Cross-site writes are refused (taskworks/api/csrf.py), on a real uvicorn server with
and without a token: every state-changing route needs ``X-Taskworks: 1``, a foreign
``Origin`` or a ``Sec-Fetch-Site`` of cross-site/same-site is a 403, and a refused
request changes nothing in the store or in Redis. The same request from the API's own
origin with the header succeeds."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from taskworks.monitoring.queues import queue_depths
from taskworks.workflows.model import workflow_from_dict
from tests.api.server import GUARD, TOKEN, ApiServer

FOREIGN = "http://evil.example"
WRITES = ("post", "put", "patch", "delete")


@pytest.fixture(params=["token", "no-token"])
def server(request: pytest.FixtureRequest, tw: Any) -> Iterator[ApiServer]:
    started = ApiServer(tw, token=TOKEN if request.param == "token" else None).start()
    yield started
    started.stop()


def _refused(response: httpx.Response, names: str) -> None:
    assert response.status_code == 403, response.text
    detail = response.json()["detail"]
    assert detail.startswith("cross-site request refused"), detail
    assert names in detail, detail


def _workflow(name: str) -> dict[str, Any]:
    return {"name": name, "version": 1, "steps": [
        {"name": "only", "task": "wf.record", "params": {"label": "only", "key": "csrf"}}]}


def _own(server: ApiServer) -> dict[str, str]:
    """What a browser adds to a write from the API's own page."""
    return {**GUARD, "Origin": server.url, "Sec-Fetch-Site": "same-origin"}


def test_every_write_route_needs_the_header(server: ApiServer) -> None:
    with server.client(guard=False) as bare:
        schema = bare.get("/openapi.json").json()
        writes = [(method, path) for path, operations in schema["paths"].items()
                  for method in operations if method in WRITES]
        assert len(writes) >= 15
        for method, path in [*writes, ("post", "/login"), ("post", "/logout")]:
            # guarded before routing: any id will do, the handler is never reached
            response = bare.request(method.upper(), re.sub(r"\{[^}]+\}", "1", path))
            _refused(response, "X-Taskworks: 1")
        # the schema says so, so generated clients and Swagger UI's "Try it out" send it
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                names = [p["name"] for p in operation.get("parameters", [])]
                assert ("X-Taskworks" in names) == (method in WRITES), (method, path)
        # reads are not guarded: a cross-site page cannot read the answer anyway (no CORS)
        assert bare.get("/api/queues", headers={"Origin": FOREIGN}).status_code == 200


def test_a_workflow_registered_cross_site_is_refused(server: ApiServer, tw: Any) -> None:
    name = f"csrf-wf-{uuid.uuid4().hex[:6]}"
    body = json.dumps(_workflow(name))
    with server.client(guard=False) as bare, server.client() as guarded:
        # the reported hole: a text/plain "simple" request with a JSON body
        _refused(bare.post("/api/workflows", content=body, headers={
            "Content-Type": "text/plain", "Origin": FOREIGN}), "Origin 'http://evil.example'")
        _refused(bare.post("/api/workflows", content=body,
                           headers={"Content-Type": "text/plain"}), "X-Taskworks: 1")
        _refused(guarded.post("/api/workflows", content=body, headers={
            "Sec-Fetch-Site": "cross-site"}), "Sec-Fetch-Site is 'cross-site'")
        assert name not in {n for n, _, _ in tw.workflows.definitions()}

        done = guarded.post("/api/workflows", content=body, headers=_own(server))
        assert done.status_code == 201, done.text
        assert name in {n for n, _, _ in tw.workflows.definitions()}


def test_a_run_started_cross_site_is_refused(server: ApiServer, tw: Any) -> None:
    name = f"csrf-run-{uuid.uuid4().hex[:6]}"
    tw.workflows.register(workflow_from_dict(_workflow(name)))
    path = f"/api/workflows/{name}/runs"
    with server.client(guard=False) as bare, server.client() as guarded:
        # an empty text/plain POST needs no body to start a run: the header is what stops it
        _refused(bare.post(path, headers={"Content-Type": "text/plain"}), "X-Taskworks: 1")
        _refused(guarded.post(path, json={}, headers={"Origin": FOREIGN}), "Origin")
        # another port of the same host is "same-site" to the browser, and refused too
        _refused(guarded.post(path, json={}, headers={"Sec-Fetch-Site": "same-site"}),
                 "Sec-Fetch-Site is 'same-site'")
        _refused(guarded.post(path, json={}, headers={"Origin": "null"}), "Origin 'null'")
        assert tw.workflows.runs(workflow=name) == []

        started = guarded.post(path, json={"input": {"x": 1}}, headers=_own(server))
        assert started.status_code == 201, started.text
        assert [r.id for r in tw.workflows.runs(workflow=name)] == [started.json()["id"]]


def test_a_dataset_uploaded_cross_site_is_refused(server: ApiServer, tw: Any) -> None:
    name = f"csrf-ds-{uuid.uuid4().hex[:6]}"
    upload = {"file": ("people.csv", b"id,name\n1,ada\n2,grace\n", "text/csv")}
    with server.client(guard=False) as bare, server.client() as guarded:
        # what a hidden form on another site sends: multipart, its Origin, no header
        _refused(bare.post("/api/datasets", files=upload, data={"name": name},
                           headers={"Origin": FOREIGN}), "Origin 'http://evil.example'")
        _refused(guarded.post("/api/datasets", files=upload, data={"name": name},
                              headers={"Origin": FOREIGN}), "Origin")
        _refused(bare.post("/api/datasets", files=upload, data={"name": name}),
                 "X-Taskworks: 1")
        _refused(bare.post("/api/datasets", params={"name": name},
                           content=b"id,name\n1,ada\n", headers={"Content-Type": "text/csv"}),
                 "X-Taskworks: 1")
        assert name not in {d.name for d in tw.jobs.datasets.all()}

        created = guarded.post("/api/datasets", files=upload, data={"name": name},
                               headers=_own(server))
        assert created.status_code == 201, created.text
        assert created.json()["row_count"] == 2


def test_a_task_submitted_cross_site_is_refused(server: ApiServer, tw: Any,
                                                redis_client: Any) -> None:
    def backlog() -> int:
        return sum(d.backlog for d in queue_depths(redis_client, tw.queue_names()).values())

    body = json.dumps({"name": "tests.echo", "args": [1]})
    with server.client(guard=False) as bare, server.client() as guarded:
        _refused(bare.post("/api/tasks", content=body, headers={"Content-Type": "text/plain"}),
                 "X-Taskworks: 1")
        _refused(guarded.post("/api/tasks", content=body, headers={
            "Content-Type": "application/json", "Origin": FOREIGN}), "Origin")
        assert backlog() == 0
        submitted = guarded.post("/api/tasks", content=body, headers={
            **_own(server), "Content-Type": "application/json"})
        assert submitted.status_code == 201, submitted.text
        assert backlog() == 1


def test_a_trusted_origin_may_write(tw: Any) -> None:
    """Behind a proxy that rewrites Host, the public origin is named in a setting."""
    server = ApiServer(tw, token=TOKEN, trusted_origins=["https://tw.example.com"]).start()
    try:
        with server.client() as guarded:
            body = {"name": "no.such.task"}
            trusted = guarded.post("/api/tasks", json=body,
                                   headers={"Origin": "https://tw.example.com"})
            assert trusted.status_code == 422  # past the guard, refused by the handler
            _refused(guarded.post("/api/tasks", json=body,
                                  headers={"Origin": "https://other.example.com"}), "Origin")
    finally:
        server.stop()
