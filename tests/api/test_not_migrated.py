"""A store `taskworks db upgrade` never ran on: the API (a real uvicorn server) answers
503 with the one sentence the CLI prints, on SQLite and on real PostgreSQL (where the
missing table is a ProgrammingError, not an OperationalError), and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import inspect

from taskworks import Taskworks
from taskworks.redaction import redact_url
from taskworks.settings import load_settings
from taskworks.store.migrate import head_revision
from tests.api.server import ApiServer
from tests.support.postgres import free_port

# routes that read the SQL store
STORE_ROUTES = ["/api/journal", "/api/journal/some-task-id", "/api/journal/stats", "/api/dlq",
                "/api/dlq/1", "/api/tasks/some-task-id", "/api/workflows", "/api/runs",
                "/api/jobs", "/api/jobs/some-job", "/api/datasets", "/api/autoscale"]


def serve(database_url: str) -> tuple[Taskworks, ApiServer]:
    tw = Taskworks(settings=load_settings(database_url=database_url))
    return tw, ApiServer(tw).start()


@pytest.fixture
def unmigrated(database_url: str) -> Iterator[tuple[Taskworks, httpx.Client]]:
    tw, server = serve(database_url)
    try:
        with server.client(token=None) as client:
            yield tw, client
    finally:
        server.stop()
        tw.store.dispose()


def test_every_store_route_is_a_503_saying_run_db_upgrade(
        unmigrated: tuple[Taskworks, httpx.Client], database_url: str) -> None:
    tw, client = unmigrated
    sentence = (f"database_url: the store at {redact_url(database_url)} has no schema yet "
                f"(this release needs revision {head_revision()}); run `taskworks db upgrade`")
    for path in STORE_ROUTES:
        answer = client.get(path)
        assert answer.status_code == 503, (path, answer.text)
        assert answer.json() == {"detail": sentence}, path
    replay = client.post("/api/dlq/replay", json={"ids": [1]})
    assert replay.status_code == 503, replay.text
    assert replay.json() == {"detail": sentence}
    assert inspect(tw.store.engine).get_table_names() == []  # nothing created


def test_a_store_that_is_down_is_still_a_503_unavailable() -> None:
    # nothing listens there: connection refused is not a schema problem
    tw, server = serve(f"postgresql://u:s3cret@127.0.0.1:{free_port()}/x")
    try:
        with server.client(token=None) as client:
            answer = client.get("/api/journal")
        assert answer.status_code == 503, answer.text
        assert answer.json() == {"detail": "the store is unavailable (OperationalError)"}
    finally:
        server.stop()
        tw.store.dispose()
