"""Bulk submit: pipelined messages that real Celery workers consume, routed and prioritised."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
import redis
from celery.result import AsyncResult

from taskworks.errors import InvalidInput
from tests.support.keys import written_keys
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess


def test_a_worker_runs_every_message_of_a_bulk_submit(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # batch_size 7: several pipelines, the last one partial
    ids = tw.submit_many("tests.echo", [[i] for i in range(40)], batch_size=7)
    assert len(ids) == len(set(ids)) == 40
    assert redis_client.llen("default\x06\x164") == 40  # default priority 5 -> kombu's 4
    start_worker(["default"])
    results = [AsyncResult(task_id, app=tw.app).get(timeout=30) for task_id in ids]
    assert results == list(range(40))


def test_every_item_form_reaches_the_task(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    items = [[1], (2,), ([3], {"fail_every": 0}), {"i": 4}, ((5,), {})]
    ids = tw.submit_many("tests.echo", items)
    start_worker(["default"])
    assert [AsyncResult(i, app=tw.app).get(timeout=30) for i in ids] == [1, 2, 3, 4, 5]


def test_routes_and_explicit_queue_are_honoured(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    routed = tw.submit_many("tasks.io_intensive.fetch", [["a"], ["b"]])
    explicit = tw.submit_many("tests.record", [["c"]], queue="cpu_intensive")
    start_worker(["io_intensive"])
    start_worker(["cpu_intensive"])
    ran = [AsyncResult(i, app=tw.app).get(timeout=30) for i in [*routed, *explicit]]
    assert [(r["label"], r["queue"]) for r in ran] == [
        ("a", "io_intensive"), ("b", "io_intensive"), ("c", "cpu_intensive")]


def test_priority_nine_is_served_before_zero(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    # the whole backlog is queued before a worker starts consuming
    for priority in (0, 9, 4):
        tw.submit_many("tests.record", [[f"p{priority}-{i}"] for i in range(8)],
                       queue="priority", priority=priority)
    start_worker(["priority"])
    wait_for(lambda: redis_client.llen("tests:order") == 24, what="all 24 tasks")
    order = [e.split("|")[0].split("-")[0] for e in redis_client.lrange("tests:order", 0, -1)]
    assert order == ["p9"] * 8 + ["p4"] * 8 + ["p0"] * 8


def test_a_task_sent_event_accompanies_every_message(
    tw: Any, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with task events on (worker.task_events), monitors see bulk submits like single ones
    monkeypatch.setitem(tw.app.conf, "task_send_sent_event", True)
    pubsub = redis_client.pubsub()
    pubsub.psubscribe("*celeryev*")
    wait_for(lambda: pubsub.get_message(timeout=0.1), what="the subscription")
    ids = tw.submit_many("tests.echo", [[i] for i in range(3)])
    seen: list[str] = []

    def collect() -> bool:
        message = pubsub.get_message(timeout=0.1)
        if message and message["type"] == "pmessage":
            seen.append(message["data"])
        return len(seen) == 3

    wait_for(collect, what="three task-sent events")
    pubsub.close()
    events = [json.loads(base64.b64decode(json.loads(data)["body"])) for data in seen]
    assert [(e["type"], e["uuid"], e["queue"]) for e in events] == [
        ("task-sent", task_id, "default") for task_id in ids]


def test_no_event_is_built_when_no_monitor_listens(tw: Any, redis_client: redis.Redis) -> None:
    def publishes() -> int:
        stats = redis_client.info("commandstats")
        return int(stats.get("cmdstat_publish", {}).get("calls", 0))

    before = publishes()
    tw.submit_many("tests.echo", [[i] for i in range(5)])
    assert publishes() == before
    assert redis_client.llen("default\x06\x164") == 5


@pytest.mark.parametrize(("call", "field"), [
    (lambda tw: tw.submit_many("no.such.task", [[1]]), "task"),
    (lambda tw: tw.submit_many("tests.echo", [[1]], queue="nosuch"), "queue"),
    (lambda tw: tw.submit_many("tests.echo", [[1]], priority=10), "priority"),
    (lambda tw: tw.submit_many("tests.echo", [[1]], batch_size=0), "batch_size"),
    (lambda tw: tw.submit_many("tests.echo", [[1], 2]), r"items\[1\]"),
])
def test_bad_input_is_refused_before_anything_is_sent(
    tw: Any, redis_client: redis.Redis, call: Callable[[Any], Any], field: str
) -> None:
    with pytest.raises(InvalidInput, match=field):
        call(tw)
    assert written_keys(redis_client) == []


def test_an_empty_list_sends_nothing(tw: Any, redis_client: redis.Redis) -> None:
    assert tw.submit_many("tests.echo", []) == []
    assert written_keys(redis_client) == []
