"""The Redis transport taskworks configures: kombu's, one client object per channel."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from taskworks import Taskworks, keys, load_settings
from taskworks.broker.transport import (
    CONSUME_SHA,
    TRANSPORT,
    WAKE_TOKENS,
    Transport,
    transport_for,
)
from tests.support.wait import wait_for


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6379/0", TRANSPORT),
    ("rediss://example.org:6380/1", TRANSPORT),
    ("valkey://127.0.0.1:6379/0", None),  # left to kombu, as before
    ("unix:///tmp/valkey.sock", None),
])
def test_redis_urls_get_the_transport_others_are_left_alone(url: str, expected: Any) -> None:
    assert transport_for(url) == expected


def test_a_built_app_uses_it_and_reports_it_as_text(broker_url: str) -> None:
    tw = Taskworks(settings=load_settings(broker_url=broker_url))
    with tw.app.connection_for_write() as conn:
        assert conn.get_transport_cls() is Transport
        # a worker's `inspect stats` reply carries this, and must encode as JSON
        assert conn.info()["transport"] == TRANSPORT


def test_messages_are_delivered_and_acknowledged_through_one_client(
    broker_url: str, redis_client: redis.Redis
) -> None:
    queue = Queue("tw-transport-test", Exchange("tw-transport-test"),
                  routing_key="tw-transport-test")
    received: list[Any] = []
    with Connection(broker_url, transport=Transport) as conn:
        channel = conn.default_channel
        created: list[Any] = []
        original = channel._create_client

        def counting(*args: Any, **kwargs: Any) -> Any:
            client = original(*args, **kwargs)
            created.append(client)
            return client

        channel._create_client = counting
        with conn.Producer(channel) as producer:
            for i in range(5):
                producer.publish({"n": i}, exchange=queue.exchange,
                                 routing_key=queue.routing_key, declare=[queue])

        def on_message(body: Any, message: Any) -> None:
            received.append(body["n"])
            message.ack()

        with conn.Consumer(queue, callbacks=[on_message], channel=channel):
            while len(received) < 5:
                conn.drain_events(timeout=5)
        # every publish, unacked-index write and ack went through one client object
        assert len(created) == 1
    assert received == [0, 1, 2, 3, 4]
    # acknowledged for real: nothing left for kombu to restore
    assert redis_client.hlen("unacked") == 0
    assert redis_client.zcard("unacked_index") == 0
    assert redis_client.llen("tw-transport-test") == 0


# -- the atomic consume path (consume.lua) and its wake-up tokens --------------------

def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name), routing_key=name)


def _publish(conn: Connection, queue: Queue, bodies: list[Any], **options: Any) -> None:
    with conn.Producer() as producer:
        for body in bodies:
            producer.publish(body, exchange=queue.exchange, routing_key=queue.routing_key,
                             declare=[queue], **options)


def _drain(conn: Connection, queue: Queue, count: int, *, ack: bool = True,
           within: float = 20) -> list[Any]:
    received: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        received.append(body)
        if ack:
            message.ack()

    deadline = time.monotonic() + within
    with conn.Consumer(queue, callbacks=[on_message]):
        while len(received) < count and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=1)
    return received


def test_a_taken_message_is_recorded_unacked_before_the_consumer_reads_the_reply(
    broker_url: str, redis_client: redis.Redis
) -> None:
    """kombu #305: BRPOP then record leaves a message nowhere while its reply is in
    flight, so a SIGKILL there loses it. Here it is in the unacked hash already."""
    queue = _queue("tw-atomic")
    with Connection(broker_url, transport=Transport) as conn:
        _publish(conn, queue, [{"n": 1}])
        channel = conn.default_channel
        channel.basic_consume("tw-atomic", False, lambda message: None, "tw-atomic-tag")
        # the poller sends the take; its reply is never read (as by a killed worker)
        conn.transport.cycle._register_BRPOP(channel)
        wait_for(lambda: redis_client.llen("tw-atomic") == 0, timeout=5)
        recorded = redis_client.hgetall("unacked")
        assert len(recorded) == 1
        tag, raw = next(iter(recorded.items()))
        payload, exchange, routing_key = json.loads(raw)
        assert payload["properties"]["delivery_tag"] == tag
        assert (exchange, routing_key) == ("tw-atomic", "tw-atomic")
        # held by this consumer, with the list it came from (broker/heartbeat.py)
        assert redis_client.zscore(channel.held_key, f"{tag}|tw-atomic") is not None
        channel.client.connection.disconnect()  # the reply dies with the connection
    # the visibility-timeout sweep (held past it, by a live or a dead consumer): put back
    with Connection(broker_url, transport=Transport,
                    transport_options={"visibility_timeout": 0}) as conn:
        conn.default_channel.qos.restore_visible(interval=1)
        assert redis_client.llen("tw-atomic") == 1
        assert redis_client.llen(keys.wake("tw-atomic")) >= 1  # the restore woke consumers
        assert [b["n"] for b in _drain(conn, queue, 1)] == [1]
    assert redis_client.hlen("unacked") == 0


def test_an_idle_consumer_waits_on_the_wake_list_and_wakes_for_a_publish(
    broker_url: str, redis_client: redis.Redis
) -> None:
    queue = _queue("tw-wake")
    with Connection(broker_url, transport=Transport) as consumer_conn, \
            Connection(broker_url, transport=Transport) as producer_conn:
        received: list[Any] = []
        with consumer_conn.Consumer(queue, callbacks=[
                lambda body, message: (received.append(body), message.ack())]):
            with contextlib.suppress(TimeoutError):
                consumer_conn.drain_events(timeout=0.5)  # finds nothing: now it waits
            channel = consumer_conn.default_channel
            assert channel._waiting or channel._pending == "BRPOP"
            _publish(producer_conn, queue, [{"n": 7}])
            deadline = time.monotonic() + 10
            while not received and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    consumer_conn.drain_events(timeout=1)
    assert received == [{"n": 7}]
    assert redis_client.llen(keys.wake("tw-wake")) == 0  # its token was spent


def test_messages_pushed_without_a_token_are_still_consumed(
    broker_url: str, redis_client: redis.Redis
) -> None:
    """A plain Celery producer pushes no wake token: the consumer's timed look finds it."""
    queue = _queue("tw-tokenless")
    with Connection(broker_url, transport=Transport) as conn:
        _publish(conn, queue, [{"n": i} for i in range(3)])
        redis_client.delete(keys.wake("tw-tokenless"))
        assert [b["n"] for b in _drain(conn, queue, 3)] == [0, 1, 2]


def test_wake_tokens_are_capped_and_spent_with_their_messages(
    broker_url: str, redis_client: redis.Redis
) -> None:
    queue = _queue("tw-cap")
    published = 3 * WAKE_TOKENS + 5
    with Connection(broker_url, transport=Transport) as conn:
        _publish(conn, queue, [{"n": i} for i in range(published)])
        assert redis_client.llen("tw-cap") == published
        # trimmed to WAKE_TOKENS at every WAKE_TOKENS-th publish: 64, then 5 more
        assert redis_client.llen(keys.wake("tw-cap")) == WAKE_TOKENS + 5
        got = _drain(conn, queue, published)
    assert [b["n"] for b in got] == list(range(published))
    assert redis_client.llen(keys.wake("tw-cap")) == 0


def test_a_message_that_is_not_kombu_json_is_set_aside_and_the_next_is_delivered(
    broker_url: str, redis_client: redis.Redis
) -> None:
    queue = _queue("tw-malformed")
    with Connection(broker_url, transport=Transport) as conn:
        conn.default_channel.queue_declare("tw-malformed")  # binds, so publishing routes
        _publish(conn, queue, [{"n": 1}])
        redis_client.rpush("tw-malformed", "not json", '{"properties": 3}')  # taken first
        assert [b["n"] for b in _drain(conn, queue, 1)] == [1]
    assert redis_client.lrange(keys.UNDELIVERABLE, 0, -1) == ['{"properties": 3}', "not json"]
    assert redis_client.hlen("unacked") == 0


def test_priorities_and_purge_keep_their_meaning(
    broker_url: str, redis_client: redis.Redis
) -> None:
    queue = Queue("tw-pri", Exchange("tw-pri"), routing_key="tw-pri",
                  queue_arguments={"x-max-priority": 9})
    with Connection(broker_url, transport=Transport) as conn:
        for n, priority in ((1, 0), (2, 9), (3, 5)):
            _publish(conn, queue, [{"n": n}], priority=priority)
        # kombu's Redis priorities: a lower number is served first
        assert [b["n"] for b in _drain(conn, queue, 3)] == [1, 3, 2]
        _publish(conn, queue, [{"n": 4}])
        assert conn.default_channel.queue_purge("tw-pri") == 1
    assert redis_client.llen(keys.wake("tw-pri")) == 0


def test_takes_go_on_after_the_server_forgets_the_script(
    broker_url: str, redis_client: redis.Redis
) -> None:
    """Takes send the script's digest once the server knows it; a restarted or flushed
    server answers NOSCRIPT, and the next take sends the script again."""
    queue = _queue("tw-noscript")
    with Connection(broker_url, transport=Transport) as conn:
        _publish(conn, queue, [{"n": i} for i in range(4)])
        assert [b["n"] for b in _drain(conn, queue, 2)] == [0, 1]
        assert conn.default_channel._script_known
        redis_client.script_flush()
        assert [b["n"] for b in _drain(conn, queue, 2)] == [2, 3]
        assert redis_client.script_exists(CONSUME_SHA) == [True]


def test_a_publish_batch_pushes_each_flushs_tokens_once_after_its_messages(
    broker_url: str, redis_client: redis.Redis
) -> None:
    queue = _queue("tw-batch")
    with Connection(broker_url, transport=Transport) as conn, conn.Producer() as producer:
        producer.maybe_declare(queue)
        with producer.batch(max_size=4):  # flushes every 4 messages, and at the end
            for i in range(10):
                producer.publish({"n": i}, exchange=queue.exchange,
                                 routing_key=queue.routing_key)
        assert redis_client.llen("tw-batch") == 10
        assert redis_client.llen(keys.wake("tw-batch")) == 10  # none lost, none extra
        with producer.batch(max_size=1000):
            for i in range(10, 10 + 3 * WAKE_TOKENS):
                producer.publish({"n": i}, exchange=queue.exchange,
                                 routing_key=queue.routing_key)
        assert redis_client.llen(keys.wake("tw-batch")) == WAKE_TOKENS
        got = _drain(conn, queue, 10 + 3 * WAKE_TOKENS)
    assert [b["n"] for b in got] == list(range(10 + 3 * WAKE_TOKENS))
