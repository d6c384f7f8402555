"""The result backend (broker/results.py) on a real Valkey: a first run's result has the
meta Celery would store; a write the server refuses, or a server that restarts, never
leaves a connection out of step with its replies."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
from celery.app.task import Context
from celery.backends.redis import RedisBackend

from taskworks import Taskworks
from taskworks.broker.embedded import EmbeddedBroker
from taskworks.broker.results import ResultBackend
from taskworks.settings import load_settings
from tests.support.postgres import free_port


class Valkey:
    def __init__(self, tmp_path: Path) -> None:
        self.broker = EmbeddedBroker(tmp_path / "data", port=free_port())
        server, _ = self.broker.start()
        self.url = server.url
        self.client = redis.Redis.from_url(server.url)


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[Valkey]:
    server = Valkey(tmp_path)
    yield server
    server.client.close()
    server.broker.stop()


def first_run(**values: object) -> Context:
    """The request of a task's first run on its first delivery (no GET before the SET)."""
    return Context(id="ignored", delivery_info={"redelivered": False}, retries=0, **values)


def backend_of(url: str) -> ResultBackend:
    backend = Taskworks(settings=load_settings(broker_url=url)).app.backend
    assert isinstance(backend, ResultBackend)
    return backend


def test_a_first_run_stores_the_meta_celery_stores(valkey: Valkey) -> None:
    ours = backend_of(valkey.url)
    celerys = RedisBackend(app=ours.app, url=ours.url)
    request = first_run(group="g-1", parent_id="p-1")
    ours.store_result("ours", {"n": 1}, "SUCCESS", request=request)
    celerys.store_result("celerys", {"n": 1}, "SUCCESS", request=request)

    stored, expected = ours.get_task_meta("ours"), celerys.get_task_meta("celerys")
    for meta in (stored, expected):
        meta.pop("task_id")
        assert datetime.fromisoformat(meta.pop("date_done")).tzinfo is not None
    assert stored == expected
    assert (stored["group_id"], stored["parent_id"]) == ("g-1", "p-1")
    assert ours.app.AsyncResult("ours").get(timeout=5) == {"n": 1}

    ours.store_result("running", None, "STARTED", request=first_run())
    assert ours.get_task_meta("running")["date_done"] is None  # not ended


def test_a_write_the_server_refuses_leaves_no_reply_behind(valkey: Valkey) -> None:
    """Valkey full: SET is refused, PUBLISH is not. The connection that sent both must not
    go back to the pool with PUBLISH's reply unread, or the next command on it would read
    that reply as its own."""
    backend = backend_of(valkey.url)
    backend.client.set("other", "its own value")
    valkey.client.config_set("maxmemory-policy", "noeviction")
    valkey.client.config_set("maxmemory", 1)
    try:
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            backend.store_result("refused", 1, "SUCCESS", request=first_run())
    finally:
        valkey.client.config_set("maxmemory", 0)
    assert backend.client.get("other") == b"its own value"
    backend.store_result("stored", 2, "SUCCESS", request=first_run())
    assert backend.get_task_meta("stored")["result"] == 2


def test_a_result_written_while_the_server_restarts_lands(valkey: Valkey) -> None:
    backend = backend_of(valkey.url)
    backend.store_result("before", 1, "SUCCESS", request=first_run())
    valkey.broker.stop()
    restart = threading.Timer(1.0, valkey.broker.start)
    restart.start()
    started = time.monotonic()
    try:
        # the first attempt fails on the dead connection; kombu's retry loop takes over
        backend.store_result("during", 2, "SUCCESS", request=first_run())
    finally:
        restart.join()
    assert time.monotonic() - started >= 0.5
    assert backend.get_task_meta("during")["result"] == 2


def test_with_result_extended_the_meta_is_celerys_extended_one(valkey: Valkey) -> None:
    backend = backend_of(valkey.url)
    backend.app.conf.result_extended = True
    request = first_run(task="tests.echo", args=[1], kwargs={}, hostname="w@h")
    backend.store_result("extended", 1, "SUCCESS", request=request)
    meta = backend.get_task_meta("extended")
    assert (meta["name"], meta["args"], meta["worker"]) == ("tests.echo", [1], "w@h")
