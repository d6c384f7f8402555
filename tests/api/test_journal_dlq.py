"""/api/journal and /api/dlq: what the workers recorded, and replaying dead letters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import redis

from tests.support.wait import wait_for


def _dead_letter(api: httpx.Client, redis_client: redis.Redis, key: str) -> dict[str, Any]:
    """A tests.toggle task that fails for good (no retries) and lands in the store."""
    redis_client.set(f"{key}:fail", 1)
    task_id = api.post("/api/tasks", json={"name": "tests.toggle", "args": [key]}).json()["id"]

    def letter() -> dict[str, Any] | None:
        rows = api.get("/api/dlq", params={"task": "tests.toggle"}).json()
        return next((r for r in rows if r["task_id"] == task_id), None)
    return wait_for(letter, timeout=30, what="the dead letter")


def test_journal_filters(api: httpx.Client, redis_client: redis.Redis,
                         start_worker: Callable[..., Any]) -> None:
    start_worker(["default"])
    ids = [api.post("/api/tasks", json={"name": "tests.echo", "args": [i], "kwargs": {
        "fail_every": 3, "password": "hunter2"}}).json()["id"] for i in (1, 2, 3)]

    def ours(params: dict[str, Any]) -> list[dict[str, Any]]:
        # the session's journal also holds other tests' entries
        rows: list[dict[str, Any]] = api.get("/api/journal", params=params).json()
        return [r for r in rows if r["task_id"] in ids]
    rows = wait_for(lambda: len(got := ours({"task": "tests.echo"})) == 3 and got,
                    what="three journal entries")
    assert sorted(r["state"] for r in rows) == ["failure", "success", "success"]
    failures = ours({"task": "tests.echo", "state": "failure", "since": "1h"})
    assert [r["args"] for r in failures] == [[3]]
    assert failures[0]["exc_type"] == "ValueError"
    assert "item 3 fails" in failures[0]["traceback"]
    assert failures[0]["kwargs"]["password"] == "***"  # the journal redacts
    assert all(r["state"] == "failure" for r in api.get("/api/journal", params={
        "state": "failure"}).json())
    newest = api.get("/api/journal", params={"limit": 1}).json()
    assert len(newest) == 1
    assert newest[0]["id"] >= max(r["id"] for r in rows)
    attempts = api.get(f"/api/journal/{failures[0]['task_id']}").json()
    assert [a["state"] for a in attempts] == ["failure"]
    stats = api.get("/api/journal/stats", params={"window": 600}).json()
    assert stats["counts"]["failure"] >= 1
    assert 0 < stats["failure_rate"] < 1


def test_journal_bad_filters_are_422_and_unknown_task_404(api: httpx.Client) -> None:
    for params, field in (({"state": "exploded"}, "state"), ({"since": "yesterday"}, "since"),
                          ({"limit": 0}, "limit"), ({"severity": "meh"}, "severity"),
                          ({"since": "99999999999w"}, "since")):
        response = api.get("/api/journal", params=params)
        assert response.status_code == 422, params
        assert response.json()["detail"][0]["field"] == field
    assert api.get("/api/journal/no-such-task").status_code == 404


def test_dead_letter_list_show_replay(api: httpx.Client, redis_client: redis.Redis,
                                      start_worker: Callable[..., Any]) -> None:
    start_worker(["default"])
    letter = _dead_letter(api, redis_client, "dlq-api")
    assert letter["exc_type"] == "KeyError"
    assert letter["replay_count"] == 0
    shown = api.get(f"/api/dlq/{letter['id']}").json()
    assert shown["args"] == ["dlq-api"]
    assert "switched to fail" in shown["traceback"]
    redis_client.delete("dlq-api:fail")
    replayed = api.post("/api/dlq/replay", json={"ids": [letter["id"]]})
    assert replayed.status_code == 200, replayed.text
    new_id = replayed.json()["replayed"][str(letter["id"])]
    wait_for(lambda: api.get(f"/api/tasks/{new_id}").json()["state"] == "SUCCESS",
             what="the replay to succeed")
    assert redis_client.get("dlq-api:ok") == "1"
    after = api.get(f"/api/dlq/{letter['id']}").json()
    assert after["replay_count"] == 1
    assert after["replay_task_id"] == new_id


def test_replay_and_purge_refuse_bad_input(api: httpx.Client, redis_client: redis.Redis,
                                           start_worker: Callable[..., Any]) -> None:
    assert api.get("/api/dlq/999999").status_code == 404
    assert api.post("/api/dlq/999999/replay").status_code == 404
    missing = api.post("/api/dlq/replay", json={"ids": [999999]})
    assert missing.status_code == 404
    nothing = api.post("/api/dlq/replay", json={})
    assert nothing.status_code == 422
    assert nothing.json()["detail"][0]["field"] == "ids"
    unfiltered = api.delete("/api/dlq")
    assert unfiltered.status_code == 422
    assert unfiltered.json()["detail"][0]["field"] == "all"
    assert api.get("/api/dlq/0").status_code == 422
    start_worker(["default"])
    letter = _dead_letter(api, redis_client, "dlq-purge")
    purged = api.delete("/api/dlq", params={"task": "tests.toggle"})
    assert purged.status_code == 200
    assert purged.json()["deleted"] >= 1
    assert api.get(f"/api/dlq/{letter['id']}").status_code == 404


def test_dead_letters_are_shown_with_secret_arguments_hidden(
        api: httpx.Client, tw: Any, start_worker: Callable[..., Any]) -> None:
    start_worker(["default"])
    task_id = api.post("/api/tasks", json={"name": "tests.echo", "args": [1], "kwargs": {
        "fail_every": 1, "password": "hunter2-api", "headers": {"X-Api-Key": "key-api"},
        "callback": "https://u:pw-api@example.org/cb?token=tok-api"}}).json()["id"]

    def letter() -> dict[str, Any] | None:
        rows = api.get("/api/dlq", params={"task": "tests.echo"}).json()
        return next((r for r in rows if r["task_id"] == task_id), None)
    listed = wait_for(letter, timeout=30, what="the dead letter")
    shown = api.get(f"/api/dlq/{listed['id']}").json()
    for body in (listed, shown):
        assert body["kwargs"] == {"fail_every": 1, "password": "***",
                                  "headers": {"X-Api-Key": "***"},
                                  "callback": "https://u:***@example.org/cb?token=***"}
        assert "hunter2-api" not in str(body)
    # the stored letter keeps them: a replay sends the task as it was
    assert tw.dead_letters.get(listed["id"]).kwargs["password"] == "hunter2-api"
