"""/api/workflows and /api/runs: register (JSON, YAML), start, watch, cancel, retry."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from tests.support.wait import wait_for


def _definition(name: str, key: str, switch: str | None = None) -> dict[str, Any]:
    load: dict[str, Any] = {"name": "load", "task": "wf.record", "depends_on": ["clean", "check"],
                            "params": {"label": "load", "key": key}}
    if switch:
        load = {"name": "load", "task": "wf.fail", "depends_on": ["clean", "check"],
                "params": {"label": "load", "key": key, "switch": switch}}
    return {"name": name, "version": 1, "steps": [
        {"name": "extract", "task": "wf.record", "params": {"label": "extract", "key": key}},
        {"name": "clean", "task": "wf.record", "depends_on": ["extract"],
         "params": {"label": "clean", "key": key}},
        {"name": "check", "task": "wf.record", "depends_on": ["extract"],
         "params": {"label": "check", "key": key}},
        load,
    ]}


@pytest.fixture
def worker(start_worker: Callable[..., Any]) -> Any:
    return start_worker(["default"], pool="threads", concurrency=4)


def _run_until(api: httpx.Client, run_id: str, state: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        run: dict[str, Any] = api.get(f"/api/runs/{run_id}").json()
        return run if run["state"] == state else None
    return wait_for(reached, timeout=30, what=f"run {run_id} to be {state}")


def test_register_start_and_follow_a_run(api: httpx.Client, worker: Any,
                                         redis_client: redis.Redis) -> None:
    name = f"data_processing-{uuid.uuid4().hex[:6]}"
    registered = api.post("/api/workflows", json=_definition(name, "wf:api"))
    assert registered.status_code == 201, registered.text
    assert [s["name"] for s in registered.json()["steps"]] == ["extract", "clean", "check",
                                                                "load"]
    assert {"name": name, "version": 1} in [
        {k: d[k] for k in ("name", "version")} for d in api.get("/api/workflows").json()]
    started = api.post(f"/api/workflows/{name}/runs", json={"input": {"x": 1}})
    assert started.status_code == 201, started.text
    run = _run_until(api, started.json()["id"], "SUCCEEDED")
    steps = {s["name"]: s for s in run["steps"]}
    assert all(s["state"] == "SUCCEEDED" for s in steps.values())
    assert steps["load"]["depends_on"] == ["clean", "check"]
    assert steps["load"]["task"] == "wf.record"
    assert run["input"] == {"x": 1}
    assert redis_client.lrange("wf:api", 0, -1)[-1] == "load"
    listed = api.get(f"/api/workflows/{name}/runs").json()
    assert [r["id"] for r in listed] == [run["id"]]
    assert api.get("/api/runs", params={"workflow": name}).json()[0]["state"] == "SUCCEEDED"


def test_register_yaml(api: httpx.Client) -> None:
    name = f"yaml-{uuid.uuid4().hex[:6]}"
    body = (f"name: {name}\nsteps:\n  - name: a\n    task: wf.record\n"
            f"  - name: b\n    task: wf.record\n    depends_on: [a]\n")
    response = api.post("/api/workflows", content=body,
                        headers={"Content-Type": "application/yaml"})
    assert response.status_code == 201, response.text
    assert api.get(f"/api/workflows/{name}").json()["steps"][1]["depends_on"] == ["a"]


def test_an_invalid_definition_names_every_problem(api: httpx.Client) -> None:
    response = api.post("/api/workflows", json={"name": "broken", "steps": [
        {"name": "a", "task": "no.such.task"},
        {"name": "b", "task": "wf.record", "depends_on": ["zzz"]}]})
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["field"] == "workflow"
    assert len(detail["errors"]) == 2
    assert any("no.such.task" in e for e in detail["errors"])
    shape = api.post("/api/workflows", json={"name": "x", "steps": "nope"})
    assert shape.status_code == 422
    assert shape.json()["detail"][0]["field"] == "workflow.steps"
    not_yaml = api.post("/api/workflows", content=b"name: [", headers={
        "Content-Type": "application/yaml"})
    assert not_yaml.status_code == 422
    assert not_yaml.json()["detail"][0]["field"] == "body"


def test_unknown_workflow_and_run_are_404(api: httpx.Client) -> None:
    assert api.get("/api/workflows/no-such-workflow").status_code == 404
    assert api.post("/api/workflows/no-such-workflow/runs", json={}).status_code == 404
    assert api.get("/api/runs/no-such-run").status_code == 404
    assert api.post("/api/runs/no-such-run/cancel").status_code == 404
    assert api.post("/api/runs/no-such-run/retry").status_code == 404


def test_failed_run_is_retried(api: httpx.Client, worker: Any,
                               redis_client: redis.Redis) -> None:
    name = f"retry-{uuid.uuid4().hex[:6]}"
    redis_client.set("wf:switch", 1)
    api.post("/api/workflows", json=_definition(name, "wf:retry", switch="wf:switch"))
    run_id = api.post(f"/api/workflows/{name}/runs", json={}).json()["id"]
    failed = _run_until(api, run_id, "FAILED")
    assert failed["failed_step"] == "load"
    redis_client.delete("wf:switch")
    assert api.post(f"/api/runs/{run_id}/retry").status_code == 200
    done = _run_until(api, run_id, "SUCCEEDED")
    assert done["resumes"] == 1


def test_cancel_a_running_run(api: httpx.Client, worker: Any) -> None:
    name = f"cancel-{uuid.uuid4().hex[:6]}"
    api.post("/api/workflows", json={"name": name, "steps": [
        {"name": "slow", "task": "wf.record", "params": {"label": "slow", "sleep": 1.5,
                                                         "key": "wf:cancel"}},
        {"name": "after", "task": "wf.record", "depends_on": ["slow"]}]})
    run_id = api.post(f"/api/workflows/{name}/runs", json={}).json()["id"]
    cancelled = api.post(f"/api/runs/{run_id}/cancel", json={})
    assert cancelled.status_code == 200
    run = _run_until(api, run_id, "CANCELLED")
    assert {s["name"]: s["state"] for s in run["steps"]}["after"] == "CANCELLED"


@pytest.mark.parametrize(("change", "field"), [
    ({"timeout": 1e20}, "timeout"),
    ({"version": 2**40}, "version"),
    ({"steps": [{"name": "a", "task": "wf.record", "timeout": 1e20}]}, "steps[0] (a).timeout"),
    ({"steps": [{"name": "a", "task": "wf.record",
                 "retries": {"max_retries": 10**6}}]}, "steps[0] (a).retries.max_retries"),
    ({"steps": [{"name": "a", "task": "wf.record",
                 "retries": {"max_retries": 999, "backoff_factor": 50}}]},
     "steps[0] (a).retries.backoff_factor"),
    ({"name": "x" * 300}, "name"),
])
def test_numbers_that_would_overflow_later_are_refused_now(api: httpx.Client,
                                                          change: dict[str, Any],
                                                          field: str) -> None:
    body = {"name": f"big-{uuid.uuid4().hex[:6]}",
            "steps": [{"name": "a", "task": "wf.record"}], **change}
    response = api.post("/api/workflows", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["field"] == field


def test_definitions_use_the_domain_model_as_their_schema(api: httpx.Client) -> None:
    """The body and the answers are Workflow (taskworks/workflows/model.py), not a copy."""
    schema = api.get("/openapi.json").json()
    workflow = {"$ref": "#/components/schemas/Workflow"}
    post = schema["paths"]["/api/workflows"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == workflow
    assert post["responses"]["201"]["content"]["application/json"]["schema"] == workflow
    get = schema["paths"]["/api/workflows/{name}"]["get"]
    assert get["responses"]["200"]["content"]["application/json"]["schema"] == workflow
    components = schema["components"]["schemas"]
    assert {"name", "steps", "version", "timeout", "description"} == set(
        components["Workflow"]["properties"])
    assert {"when", "retries", "on_failure", "run_if_failed"} <= set(
        components["Step"]["properties"])
    assert "negate" in components["Condition"]["properties"]

    name = f"model-{uuid.uuid4().hex[:6]}"
    registered = api.post("/api/workflows", json={"name": name, "timeout": 60, "steps": [
        {"name": "a", "task": "wf.record", "retries": 2},
        {"name": "b", "task": "wf.record", "depends_on": "a",
         "when": {"type": "field_exists", "field": "results.a"}}]})
    assert registered.status_code == 201, registered.text
    body = registered.json()
    assert body == api.get(f"/api/workflows/{name}").json()
    assert (body["version"], body["timeout"]) == (1, 60)
    a, b = body["steps"]
    assert a["retries"] == {"max_retries": 2, "base_delay": 1.0, "backoff_factor": 2.0,
                            "max_delay": 300.0, "jitter": True}
    assert (b["depends_on"], b["when"]["field"], b["on_failure"]) == (
        ["a"], "results.a", "fail_fast")
