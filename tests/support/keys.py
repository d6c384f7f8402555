"""What a test wrote to Redis, without the transport's heartbeat registry: a consumer
of the test process (a result or reply consumer) beats once a second from a thread
(taskworks/broker/heartbeat.py), whatever the test is doing."""

from __future__ import annotations

from typing import Any

import redis

from taskworks import keys


def written_keys(client: redis.Redis) -> list[Any]:
    return sorted(key for key in client.keys("*")
                  if not _heartbeat(key.decode() if isinstance(key, bytes) else key))


def _heartbeat(key: str) -> bool:
    return key == keys.CONSUMERS or key.startswith(keys.HELD)
