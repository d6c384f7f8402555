"""The durable schedule (broker/schedule.py): a delayed message waits in Redis until due,
is published once by whichever mover gets it, and survives a broker restart."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from taskworks import keys
from taskworks.broker import schedule
from taskworks.broker.embedded import EmbeddedBroker
from taskworks.broker.transport import Transport
from tests.support.postgres import free_port
from tests.support.wait import wait_for
from tests.support.workers import ROOT


@pytest.fixture(autouse=True)
def no_mover_of_this_process() -> None:
    """These tests move by hand: a mover an earlier test of this process started (with
    its first take) would move their messages first."""
    schedule.stop_movers()


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name), routing_key=name)


def _eta(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def _published(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """Every message in ``queue``'s lists (all priorities), decoded."""
    return [json.loads(raw) for key in client.scan_iter(f"{queue}*")
            if client.type(key) == "list" for raw in client.lrange(key, 0, -1)]


def test_a_message_with_a_future_eta_waits_in_the_schedule(broker_url: str,
                                                           redis_client: redis.Redis) -> None:
    queue = _queue("tw-sched")
    with Connection(broker_url, transport=Transport) as conn, conn.Producer() as producer:
        producer.publish({"n": 1}, exchange=queue.exchange, routing_key="tw-sched",
                         declare=[queue], headers={"id": "t-1", "task": "x", "eta": _eta(1.0)})
        producer.publish({"n": 2}, exchange=queue.exchange, routing_key="tw-sched",
                         headers={"id": "t-2", "task": "x", "eta": _eta(-5)})  # past: at once
    assert [m["headers"]["id"] for m in _published(redis_client, "tw-sched")] == ["t-2"]
    assert redis_client.zcard(keys.SCHEDULE) == 1
    assert redis_client.hgetall(keys.SCHEDULE_COUNTS) == {"tw-sched": "1"}
    assert redis_client.hkeys(keys.SCHEDULE_IDS) == ["t-1"]
    assert schedule.move_due(redis_client)[0] == 0  # not due yet
    time.sleep(1.05)
    moved, next_due = schedule.move_due(redis_client)
    assert (moved, next_due) == (1, None)
    by_id = {m["headers"]["id"]: m for m in _published(redis_client, "tw-sched")}
    assert by_id["t-1"]["headers"]["eta"] is None  # a worker runs it as it takes it
    assert by_id["t-1"]["headers"]["taskworks_due"] > 0
    # nothing left behind, and one wake token per message
    assert [redis_client.exists(k) for k in (keys.SCHEDULE, keys.SCHEDULE_ENVELOPES,
                                             keys.SCHEDULE_IDS, keys.SCHEDULE_COUNTS)] \
        == [0, 0, 0, 0]
    assert redis_client.llen(keys.wake("tw-sched")) == 2


def _movers_running() -> int:
    return sum(t.name == "taskworks-schedule-mover" for t in threading.enumerate())


def test_a_consumers_mover_publishes_what_is_due_and_stops_when_it_closes(
        broker_url: str, redis_client: redis.Redis) -> None:
    """A process that consumed once and closed must not keep a thread knocking on the
    broker (a fork of it copies the locks that thread holds)."""
    queue = _queue("tw-mover")
    got: list[Any] = []
    with Connection(broker_url, transport=Transport) as conn:
        with conn.Producer() as producer:
            producer.publish({"n": 1}, exchange=queue.exchange, routing_key="tw-mover",
                             declare=[queue], headers={"id": "m-1", "task": "x",
                                                       "eta": _eta(0.5)})
        with conn.Consumer(queue, callbacks=[lambda body, message: (got.append(body),
                                                                    message.ack())]):
            deadline = time.monotonic() + 10
            while not got and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    conn.drain_events(timeout=0.5)
        assert got == [{"n": 1}]  # the mover of the consuming channel published it
        assert _movers_running() == 1
    wait_for(lambda: _movers_running() == 0, timeout=5, what="the mover to stop")
    assert redis_client.zcard(keys.SCHEDULE) == 0


def test_a_child_forked_while_the_registry_lock_is_held_gets_a_lock_of_its_own() -> None:
    from taskworks.broker import heartbeat
    with schedule._movers_lock, heartbeat._beats_lock:  # held as a thread would at fork
        pid = os.fork()
        if pid == 0:  # the child: the fork's copies would never be released
            ok = schedule._movers_lock.acquire(timeout=2) and heartbeat._beats_lock.acquire(
                timeout=2)
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_batch_publish_schedules_its_delayed_messages(broker_url: str,
                                                        redis_client: redis.Redis) -> None:
    queue = _queue("tw-batch")
    with Connection(broker_url, transport=Transport) as conn, conn.Producer() as producer:
        producer.maybe_declare(queue)
        with producer.batch(max_size=10):  # kombu's pipelined batch (submit_many's)
            for n in range(5):
                producer.publish({"n": n}, exchange=queue.exchange, routing_key="tw-batch",
                                 retry=False, headers={"id": f"b-{n}", "task": "x",
                                                       "eta": _eta(60 if n % 2 else -1)})
    assert sorted(m["headers"]["id"] for m in _published(redis_client, "tw-batch")) \
        == ["b-0", "b-2", "b-4"]
    assert sorted(redis_client.hkeys(keys.SCHEDULE_IDS)) == ["b-1", "b-3"]
    assert redis_client.llen(keys.wake("tw-batch")) == 3  # a token per published one


def test_cancel_takes_a_message_out_once(broker_url: str, redis_client: redis.Redis) -> None:
    queue = _queue("tw-cancel")
    with Connection(broker_url, transport=Transport) as conn, conn.Producer() as producer:
        producer.publish({"n": 1}, exchange=queue.exchange, routing_key="tw-cancel",
                         declare=[queue], headers={"id": "c-1", "task": "x", "eta": _eta(0.3)})
    cancelled = schedule.cancel(redis_client, "c-1")
    assert cancelled is not None
    assert (cancelled["id"], cancelled["queue"]) == ("c-1", "tw-cancel")
    assert schedule.cancel(redis_client, "c-1") is None
    time.sleep(0.4)
    assert schedule.move_due(redis_client) == (0, None)
    assert _published(redis_client, "tw-cancel") == []
    assert redis_client.exists(keys.SCHEDULE_COUNTS) == 0


def test_a_fenced_publish_fires_once(broker_url: str, redis_client: redis.Redis) -> None:
    """Two beats that read the same last fire time: only the first publishes."""
    queue = _queue("tw-fence")
    with Connection(broker_url, transport=Transport) as conn, conn.Producer() as producer:
        producer.maybe_declare(queue)
        for attempt in range(2):
            with schedule.fenced("nightly", "", "100") as fence:
                producer.publish({"attempt": attempt}, exchange=queue.exchange,
                                 routing_key="tw-fence")
            assert fence.fired is (attempt == 0)
        with schedule.fenced("nightly", "100", "200") as fence:
            producer.publish({"attempt": 2}, exchange=queue.exchange, routing_key="tw-fence")
        assert fence.fired is True
    assert sorted(json.loads(base64.b64decode(m["body"]))["attempt"]
                  for m in _published(redis_client, "tw-fence")) == [0, 2]
    assert redis_client.hget(keys.BEAT_LAST_FIRE, "nightly") == "200"


def _fill(client: redis.Redis, queue: str, count: int) -> None:
    """``count`` due messages, written straight into the schedule (fast)."""
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        message = {"body": str(n), "headers": {"id": f"m-{n}", "task": "x", "eta": None},
                   "properties": {"delivery_tag": f"tag-{n}", "priority": 0}}
        schedule.add(pipe, message, queue, queue, time.time() - 1)
    pipe.execute()


def test_concurrent_movers_publish_each_message_exactly_once(redis_client: redis.Redis
                                                             ) -> None:
    _fill(redis_client, "tw-race", 6000)
    movers = [redis.Redis(connection_pool=redis_client.connection_pool) for _ in range(4)]

    def move(client: redis.Redis) -> None:
        while schedule.move_due(client, budget=200)[0]:
            pass

    threads = [threading.Thread(target=move, args=(c,)) for c in movers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bodies = Counter(redis_client.lrange("tw-race", 0, -1))
    assert len(bodies) == 6000
    assert set(bodies.values()) == {1}
    assert redis_client.zcard(keys.SCHEDULE) == 0


#: a mover process: the move script, called as broker/schedule.py calls it (without
#: importing taskworks, so that a process starts in milliseconds and is killed often)
MOVER = """
import sys, time, redis
client = redis.Redis.from_url(sys.argv[1])
move = client.register_script(open(sys.argv[2]).read())
print("ready", flush=True)
while True:
    move(keys=sys.argv[3:8], args=[repr(time.time()), 5000, sys.argv[8], 64, 10000])
"""


def test_a_mover_killed_mid_move_loses_nothing_and_publishes_nothing_twice(
        broker_url: str, redis_client: redis.Redis) -> None:
    """SIGKILL movers over and over while they move large batches: every message ends
    up in its list exactly once."""
    total = 30_000
    _fill(redis_client, "tw-killed", total)
    kills = 0
    rng = random.Random(7)
    while redis_client.zcard(keys.SCHEDULE) and kills < 40:
        proc = subprocess.Popen(
            [sys.executable, "-c", MOVER, broker_url,
             str(ROOT / "taskworks" / "broker" / "schedule_move.lua"), keys.SCHEDULE,
             keys.SCHEDULE_ENVELOPES, keys.SCHEDULE_IDS, keys.SCHEDULE_COUNTS,
             keys.UNDELIVERABLE, keys.WAKE], cwd=ROOT, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.03))  # mid-batch, most of the time
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills >= 2, "the movers finished before a second kill: nothing was tested"
    while schedule.move_due(redis_client)[0]:
        pass
    bodies = Counter(redis_client.lrange("tw-killed", 0, -1))
    assert len(bodies) == total
    assert set(bodies.values()) == {1}
    assert redis_client.exists(keys.SCHEDULE_ENVELOPES, keys.SCHEDULE_COUNTS) == 0


def test_the_schedule_survives_a_broker_restart(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "data", port=free_port())
    server, _ = broker.start()
    try:
        queue = _queue("tw-restart")
        with Connection(server.url, transport=Transport) as conn, \
                conn.Producer() as producer:
            producer.publish({"n": 1}, exchange=queue.exchange, routing_key="tw-restart",
                             declare=[queue], headers={"id": "r-1", "task": "x",
                                                       "eta": _eta(2.0)})
        broker.stop()
        server, _ = broker.start()
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert client.hkeys(keys.SCHEDULE_IDS) == ["r-1"]
        wait_for(lambda: schedule.move_due(client)[0] == 1, timeout=5, what="due")
        assert [json.loads(m)["headers"]["id"] for m in client.lrange("tw-restart", 0, -1)] \
            == ["r-1"]
        client.close()
    finally:
        broker.stop()
