"""/api/tasks against the real stack: a uvicorn server, a real worker, real Valkey."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.wait import wait_for


def _until(api: httpx.Client, task_id: str, state: str, path: str = "") -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"/api/tasks/{task_id}{path}").json()
        return body if body.get("state") == state else None
    return wait_for(reached, timeout=30, what=f"task {task_id} to reach {state}")


def test_submit_then_status_result_and_attempts(api: httpx.Client,
                                                start_worker: Callable[..., Any]) -> None:
    start_worker(["default"])
    response = api.post("/api/tasks", json={"name": "tests.echo", "args": [7]})
    assert response.status_code == 201, response.text
    submitted = response.json()
    assert submitted["name"] == "tests.echo"
    assert submitted["queue"] == "default"
    done = _until(api, submitted["id"], "SUCCESS")
    assert done["ready"] is True
    assert done["result"] == 7
    result = api.get(f"/api/tasks/{submitted['id']}/result").json()
    assert result == {"id": submitted["id"], "state": "SUCCESS", "ready": True, "result": 7,
                      "error": None}
    # the journal is written in batches: the attempt shows up shortly after
    attempts = wait_for(lambda: api.get(f"/api/tasks/{submitted['id']}").json()["attempts"],
                        what="the journaled attempt")
    assert [(a["attempt"], a["state"]) for a in attempts] == [(1, "success")]
    assert api.get(f"/api/tasks/{submitted['id']}").json()["name"] == "tests.echo"


def test_a_queued_task_is_known_before_any_worker_sees_it(api: httpx.Client) -> None:
    task_id = api.post("/api/tasks", json={"name": "tests.echo", "args": [1],
                                           "queue": "scheduled"}).json()["id"]
    status = api.get(f"/api/tasks/{task_id}").json()
    assert status["state"] == "PENDING"
    assert status["ready"] is False
    assert api.get("/api/queues").json()[4] == {"name": "scheduled", "waiting": 1,
                                                "unacked": 0, "backlog": 1}


def test_progress_and_failure_are_reported(api: httpx.Client,
                                           start_worker: Callable[..., Any]) -> None:
    start_worker(["default"])
    task_id = api.post("/api/tasks", json={"name": "tests.stepper",
                                           "kwargs": {"steps": 3, "pause": 0.3}}).json()["id"]
    moving = _until(api, task_id, "PROGRESS", "/progress")
    assert moving["total"] == 3
    assert 0 < moving["percent"] <= 100
    assert _until(api, task_id, "SUCCESS")["result"] == {"steps": 3}
    failing = api.post("/api/tasks", json={"name": "tests.critical",
                                           "args": ["boom"]}).json()["id"]  # no retries
    failed = _until(api, failing, "FAILURE")
    assert failed["ready"] is True
    assert failed["error"] == "ValueError: boom"


def test_revoke_a_task_waiting_for_its_countdown(api: httpx.Client,
                                                 start_worker: Callable[..., Any]) -> None:
    start_worker(["default"])
    task_id = api.post("/api/tasks", json={"name": "tests.echo", "args": [2],
                                           "countdown": 2}).json()["id"]
    revoked = api.post(f"/api/tasks/{task_id}/revoke", json={})
    assert revoked.status_code == 202
    assert revoked.json() == {"id": task_id, "revoked": True, "terminate": False}
    assert _until(api, task_id, "REVOKED")["error"] is not None


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "no.such.task"}, "task"),
    ({"name": "tests.echo", "queue": "nowhere"}, "queue"),
    ({"name": "tests.echo", "priority": 10}, "priority"),
    ({"name": "tests.echo", "countdown": -1}, "countdown"),
    ({"name": "tests.echo", "countdown": 400 * 86400}, "countdown"),  # over a year
    ({"name": "tests.echo", "expires": 0}, "expires"),
    ({"name": "tests.echo", "countdown": 60, "expires": 30}, "expires"),  # before it is due
    ({"name": "tests.echo", "args": {"not": "a list"}}, "args"),
    ({"name": "tests.echo", "kwargs": [1]}, "kwargs"),
    ({"name": ""}, "name"),
    ({"args": [1]}, "name"),
    ({"name": "tests.echo", "surprise": 1}, "surprise"),
])
def test_bad_input_is_a_422_naming_the_field(api: httpx.Client, body: dict[str, Any],
                                             field: str) -> None:
    response = api.post("/api/tasks", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [d["field"] for d in detail] == [field]
    assert detail[0]["msg"]


def test_invalid_input_carries_value_and_expectation(api: httpx.Client) -> None:
    detail = api.post("/api/tasks", json={"name": "no.such.task"}).json()["detail"][0]
    assert detail == {"type": "invalid_input", "loc": ["task"], "field": "task",
                      "value": "no.such.task", "expected": "the name of a registered task",
                      "msg": "task: got 'no.such.task', expected the name of a registered task"}


def test_a_body_that_is_not_json_is_a_422(api: httpx.Client) -> None:
    response = api.post("/api/tasks", content=b"{nope", headers={
        "Content-Type": "application/json"})
    assert response.status_code == 422


def test_an_unknown_task_id_is_a_404(api: httpx.Client) -> None:
    for path in ("", "/progress", "/result"):
        response = api.get(f"/api/tasks/no-such-task-id{path}")
        assert response.status_code == 404, path
        assert "no-such-task-id" in response.json()["detail"]


def test_a_call_the_task_cannot_take_is_a_422_naming_the_arguments(api: Any) -> None:
    """Celery checks the arguments against the task's signature before sending: a 422,
    not a 500 (found by reading the code)."""
    response = api.post("/api/tasks", json={"name": "tests.echo", "args": [], "kwargs": {}})
    assert response.status_code == 422, response.text
    [entry] = response.json()["detail"]
    assert entry["field"] == "args"
    assert "tests.echo" in entry["expected"]
