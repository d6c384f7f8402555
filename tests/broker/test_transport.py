"""The Redis transport taskworks configures: kombu's, one client object per channel."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from taskworks import Taskworks, load_settings
from taskworks.broker.transport import TRANSPORT, Transport, transport_for


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
