"""The undeliverable list is trimmed at every push (consume.lua), so a producer of
foreign messages cannot fill the broker's memory: on the real Valkey."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis
from kombu import Connection, Exchange, Queue

from taskworks import keys
from taskworks.broker.transport import Channel, Transport


def _take(conn: Connection, queue: Queue, bodies: list[Any]) -> list[Any]:
    """Publish ``bodies`` and drain them (the foreign entries are met on the way)."""
    received: list[Any] = []
    with conn.Producer() as producer:
        for body in bodies:
            producer.publish(body, exchange=queue.exchange, routing_key=queue.routing_key,
                             declare=[queue])
    deadline = time.monotonic() + 20
    with conn.Consumer(queue, callbacks=[lambda body, m: (received.append(body), m.ack())]):
        while len(received) < len(bodies) and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=1)
    return received


def test_the_list_keeps_the_newest_up_to_the_transport_option(
        broker_url: str, redis_client: redis.Redis) -> None:
    queue = Queue("tw-undeliverable", Exchange("tw-undeliverable"),
                  routing_key="tw-undeliverable")
    with Connection(broker_url, transport=Transport,
                    transport_options={"undeliverable_max": 3}) as conn:
        conn.default_channel.queue_declare("tw-undeliverable")
        for round_ in range(2):
            foreign = [f"foreign {round_}.{i}" for i in range(5)]
            redis_client.rpush("tw-undeliverable", *reversed(foreign))  # taken in order
            assert _take(conn, queue, [{"n": round_}]) == [{"n": round_}]
            assert redis_client.lrange(keys.UNDELIVERABLE, 0, -1) == foreign[2:]


def test_the_default_cap(broker_url: str, redis_client: redis.Redis) -> None:
    assert Channel.undeliverable_max == keys.UNDELIVERABLE_MAX == 10_000
    redis_client.rpush(keys.UNDELIVERABLE, *range(keys.UNDELIVERABLE_MAX))
    queue = Queue("tw-undeliverable", Exchange("tw-undeliverable"),
                  routing_key="tw-undeliverable")
    with Connection(broker_url, transport=Transport) as conn:
        conn.default_channel.queue_declare("tw-undeliverable")
        redis_client.rpush("tw-undeliverable", "not json", "{}")
        assert _take(conn, queue, [{"n": 1}]) == [{"n": 1}]
    assert redis_client.llen(keys.UNDELIVERABLE) == keys.UNDELIVERABLE_MAX
    assert redis_client.lrange(keys.UNDELIVERABLE, -2, -1) == ["{}", "not json"]
    assert redis_client.lindex(keys.UNDELIVERABLE, 0) == "2"
