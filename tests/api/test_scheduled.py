"""/api/scheduled: tasks submitted through the API with a countdown, listed, counted,
shown with secrets hidden, and cancelled through the cross-site guard."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from celery.exceptions import TaskRevokedError

from tests.api.server import ApiServer


def test_list_summary_show_and_cancel(api: httpx.Client, api_server: ApiServer,
                                      tw: Any) -> None:
    ids = [api.post("/api/tasks", json={"name": "tests.echo", "args": [i], "countdown": c,
                                        "kwargs": {"password": "hunter2"}}).json()["id"]
           for i, c in ((1, 900), (2, 300))]
    listed = api.get("/api/scheduled").json()
    assert [t["id"] for t in listed] == ids[::-1]  # the earliest due first
    assert (listed[0]["queue"], listed[0]["priority"]) == ("default", 5)
    assert listed[0]["due"].endswith(("Z", "+00:00"))
    assert api.get("/api/scheduled", params={"queue": "priority"}).json() == []
    assert [t["id"] for t in api.get("/api/scheduled", params={"limit": 1}).json()] == [ids[1]]
    assert api.get("/api/scheduled", params={"limit": 0}).status_code == 422

    summary = api.get("/api/scheduled/summary").json()
    assert (summary["total"], summary["by_queue"]) == (2, {"default": 2})
    assert summary["due_within"] == {"1m": 0, "1h": 2, "1d": 2}
    assert summary["mover_lag"] == 0

    shown = api.get(f"/api/scheduled/{ids[0]}").json()
    assert (shown["args"], shown["kwargs"]) == ([1], {"password": "***"})
    assert "hunter2" not in api.get(f"/api/scheduled/{ids[0]}").text

    with api_server.client(guard=False) as bare:  # a write needs the cross-site guard
        assert bare.delete(f"/api/scheduled/{ids[0]}").status_code == 403
    cancelled = api.delete(f"/api/scheduled/{ids[0]}")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["kwargs"] == {"password": "***"}
    with pytest.raises(TaskRevokedError):
        tw.app.AsyncResult(ids[0]).get(timeout=5)
    for response in (api.delete(f"/api/scheduled/{ids[0]}"),
                     api.get(f"/api/scheduled/{ids[0]}")):
        assert response.status_code == 404
        assert "no scheduled task" in response.json()["detail"]
    assert api.get("/api/scheduled/summary").json()["total"] == 1
