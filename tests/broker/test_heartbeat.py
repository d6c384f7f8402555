"""Consumer heartbeats (broker/heartbeat.py, sweep.lua): what a dead consumer held goes
back to its queue within seconds, once, marked redelivered; a live one keeps its own."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from kombu import Connection, Exchange, Queue

from taskworks import keys
from taskworks.broker.heartbeat import sweep
from taskworks.broker.transport import Transport
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess

#: consumers of these tests count as dead after 2 s without a beat (6 s by default)
FAST = {"consumer_timeout": 2}


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name), routing_key=name)


def _publish(conn: Connection, queue: Queue, bodies: list[Any]) -> None:
    with conn.Producer() as producer:
        for body in bodies:
            producer.publish(body, exchange=queue.exchange, routing_key=queue.routing_key,
                             declare=[queue])


def _take(conn: Connection, queue: Queue, n: int) -> list[Any]:
    """Take ``n`` messages without acknowledging them."""
    got: list[Any] = []
    with conn.Consumer(queue, callbacks=[lambda body, message: got.append(message)]):
        deadline = time.monotonic() + 10
        while len(got) < n and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=1)
    assert len(got) == n
    return got


def test_a_sigkilled_workers_task_runs_again_elsewhere_within_ten_seconds(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    """No short visibility timeout here (2 h): only the heartbeat can bring it back."""
    assert tw.settings.visibility_timeout >= 3600
    first = start_worker(["default"])
    result = tw.submit("tests.slow_mark", ["beat", 20.0])
    wait_for(lambda: redis_client.get("beat:runs") == "1", what="first attempt to start")
    start_worker(["default"])  # ready, idle, before the kill: only the restore is timed
    killed = time.monotonic()
    first.kill()
    wait_for(lambda: redis_client.get("beat:runs") == "2", timeout=15,
             what="the task to start again on the other worker")
    back_after = time.monotonic() - killed
    assert back_after <= 10, f"started again {back_after:.1f}s after the SIGKILL"
    assert result.get(timeout=40) == 2
    assert redis_client.get("beat:done") == "1"
    # acknowledged after its result is stored (with the worker's next take)
    wait_for(lambda: redis_client.hlen("unacked") == 0, timeout=5, what="the ack")


def test_a_live_consumer_keeps_what_it_holds(broker_url: str, redis_client: redis.Redis
                                            ) -> None:
    queue = _queue("tw-live")
    with Connection(broker_url, transport=Transport, transport_options=FAST) as conn:
        _publish(conn, queue, [{"n": 1}])
        [message] = _take(conn, queue, 1)
        time.sleep(3.5)  # past the timeout: its beats keep it alive
        assert sweep(redis_client, [], timeout=2) == 0
        assert redis_client.llen("tw-live") == 0
        message.ack()
    assert redis_client.hlen("unacked") == 0


def test_a_dead_consumers_messages_go_back_once_marked_redelivered_and_a_late_ack_of_the_first_holder_keeps_the_new_holders_entry(  # noqa: E501
    broker_url: str, redis_client: redis.Redis
) -> None:
    queue = _queue("tw-dead")
    with Connection(broker_url, transport=Transport, transport_options=FAST) as first, \
            Connection(broker_url, transport=Transport, transport_options=FAST) as second:
        _publish(first, queue, [{"n": 1}])
        [held] = _take(first, queue, 1)
        assert not held.delivery_info.get("redelivered")
        first.default_channel.stop_beating()  # as if its process had died
        wait_for(lambda: sweep(redis_client, [], timeout=2) == 1, timeout=10,
                 what="a sweep to give the message back")
        assert redis_client.llen("tw-dead") == 1
        [again] = _take(second, queue, 1)
        assert again.delivery_info["redelivered"] is True
        assert again.delivery_tag == held.delivery_tag
        held.ack()  # the first holder was only slow: its late ack must not free the copy
        first.default_channel.flush_acks()
        assert redis_client.hexists("unacked", again.delivery_tag)
        again.ack()
    assert redis_client.hlen("unacked") == 0
    assert redis_client.llen("tw-dead") == 0


def test_concurrent_sweeps_move_each_message_exactly_once(
    broker_url: str, redis_client: redis.Redis
) -> None:
    queue = _queue("tw-sweep")
    with Connection(broker_url, transport=Transport, transport_options=FAST) as conn:
        _publish(conn, queue, [{"n": i} for i in range(300)])
        channel = conn.default_channel
        taken = _take(conn, queue, 300)
        assert redis_client.zcard(channel.held_key) == 300
        channel.stop_beating()
        time.sleep(2.5)

        moved: list[int] = []

        def sweeper() -> None:
            client = redis.Redis.from_url(broker_url)
            for _ in range(20):
                moved.append(sweep(client, [], timeout=2, budget=7))
            client.close()

        threads = [threading.Thread(target=sweeper) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        channel._held.clear()  # what the dead process knew dies with it
        del taken
    assert sum(moved) == 300
    assert redis_client.llen("tw-sweep") == 300
    assert redis_client.hlen("unacked") == 0
    assert redis_client.exists(keys.held(channel.consumer_id)) == 0
    assert redis_client.zscore(keys.CONSUMERS, channel.consumer_id) is None
