"""How deep each queue really is: waiting messages plus reserved (unacked) ones.

A worker prefetches messages and, with acks_late, keeps every message it holds or runs
unacknowledged until the task ends. Kombu's Redis transport keeps those in one hash
(``unacked``), away from the queue's list, so ``LLEN`` alone hides a backlog that
workers have prefetched. This module reads both in one pipeline (one round trip).

Layout (kombu's Redis transport): a queue ``q`` with priority levels is one list per
level, ``q`` for level 0 and ``q\\x06\\x16<n>`` for the others; every unacked message is
a field of the ``unacked`` hash whose value is the JSON ``[message, exchange,
routing_key]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import redis

__all__ = ["PRIORITY_LEVELS", "PRIORITY_SEP", "UNACKED_KEY", "QueueDepth", "queue_depths"]

#: kombu.transport.redis.Channel.sep / unacked_key
PRIORITY_SEP = "\x06\x16"
UNACKED_KEY = "unacked"
PRIORITY_LEVELS = range(10)


@dataclass(frozen=True)
class QueueDepth:
    waiting: int
    #: reserved by a worker (prefetched) or running, not yet acknowledged
    unacked: int

    @property
    def backlog(self) -> int:
        return self.waiting + self.unacked


def _lists_of(queue: str) -> list[str]:
    return [queue if level == 0 else f"{queue}{PRIORITY_SEP}{level}"
            for level in PRIORITY_LEVELS]


def _routing_key(raw: bytes | str) -> str | None:
    try:
        entry = json.loads(raw)
        return str(entry[2]) if isinstance(entry, list) and len(entry) >= 3 else None
    except (ValueError, TypeError):
        return None


def queue_depths(client: redis.Redis, queues: Iterable[str]) -> dict[str, QueueDepth]:
    """Depth of every named queue. Queue names double as routing keys in taskworks'
    topology, which is how an unacked message is attributed to its queue."""
    names = list(queues)
    pipe = client.pipeline(transaction=False)
    for name in names:
        for key in _lists_of(name):
            pipe.llen(key)
    pipe.hvals(UNACKED_KEY)
    replies = pipe.execute()
    unacked_values = replies.pop()
    unacked: dict[str, int] = {}
    for raw in unacked_values:
        routing_key = _routing_key(raw)
        if routing_key is not None:
            unacked[routing_key] = unacked.get(routing_key, 0) + 1
    levels = len(PRIORITY_LEVELS)
    return {
        name: QueueDepth(waiting=sum(int(n) for n in replies[i * levels:(i + 1) * levels]),
                         unacked=unacked.get(name, 0))
        for i, name in enumerate(names)
    }
