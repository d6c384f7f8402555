"""/api/periodic: list the periodic entries, pause and resume one (writes pass the
cross-site guard like every other)."""

from __future__ import annotations

from datetime import datetime

import httpx
import redis

from taskworks import keys
from taskworks.scheduling.firing import format_time
from tests.api.server import ApiServer


def test_list_pause_and_resume(api: httpx.Client, redis_client: redis.Redis) -> None:
    redis_client.hset(keys.BEAT_LAST_FIRE, "daily-report", format_time(1_780_020_000.0))
    listed = api.get("/api/periodic")
    assert listed.status_code == 200
    rows = {row["name"]: row for row in listed.json()}
    assert set(rows) == {"cleanup-expired-data", "daily-report", "health-check",
                         "taskworks-workflows-sweep"}
    report = rows["daily-report"]
    assert report["schedule"] == "cron 0 2 * * *"
    assert (report["timezone"], report["missed"], report["paused"]) == ("UTC", "skip", False)
    assert datetime.fromisoformat(report["last_fire"]).timestamp() == 1_780_020_000.0
    assert datetime.fromisoformat(report["next_fire"]).strftime("%H:%M") == "02:00"

    paused = api.post("/api/periodic/daily-report/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    assert paused.json()["next_fire"] is None
    assert redis_client.sismember(keys.BEAT_PAUSED, "daily-report")
    assert {r["name"]: r["paused"] for r in api.get("/api/periodic").json()}["daily-report"]

    resumed = api.post("/api/periodic/daily-report/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused"] is False
    assert not redis_client.sismember(keys.BEAT_PAUSED, "daily-report")


def test_unknown_entry_is_404_and_a_bad_name_422(api: httpx.Client,
                                                 redis_client: redis.Redis) -> None:
    assert api.post("/api/periodic/no-such-entry/pause").status_code == 404
    assert api.post("/api/periodic/no-such-entry/resume").status_code == 404
    assert api.post("/api/periodic/bad%20name/pause").status_code == 422
    assert not redis_client.exists(keys.BEAT_PAUSED)


def test_writes_need_the_token_and_the_cross_site_header(api_server: ApiServer,
                                                         redis_client: redis.Redis) -> None:
    with api_server.client(token=None) as anonymous:
        assert anonymous.get("/api/periodic").status_code == 401
        assert anonymous.post("/api/periodic/health-check/pause").status_code == 401
    with api_server.client(guard=False) as unguarded:
        refused = unguarded.post("/api/periodic/health-check/pause")
        assert refused.status_code == 403
        assert "X-Taskworks" in refused.json()["detail"]
    assert not redis_client.exists(keys.BEAT_PAUSED)
