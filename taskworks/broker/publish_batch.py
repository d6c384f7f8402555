"""kombu's pipelined publish batch with its messages' wake tokens coalesced.

A consumer of this transport that found every queue empty blocks on its queues' wake
lists (transport.py); each published message pushes a token there. A batch of thousands
of messages pushes at most WAKE_TOKENS per queue and flush.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from kombu.transport import redis as kombu_redis

from taskworks import keys

__all__ = ["WAKE_TOKENS", "PublishBatch"]

#: wake tokens kept per queue: enough to wake every idle consumer; more would only grow
#: where no consumer of this transport reads them (a plain Celery worker). A channel
#: trims the list every this many publishes, so it holds at most this many plus this
#: many per publishing channel
WAKE_TOKENS = 64


class PublishBatch(kombu_redis.PublishBatch):  # type: ignore[misc]
    """kombu's pipelined publish batch, with its messages' wake tokens coalesced: one
    LPUSH of up to WAKE_TOKENS tokens per queue in each flush, after the messages.

    A message's token is counted once its commands are in the pipeline (kombu may flush
    before adding them), so a flush never wakes a consumer for a message it does not
    carry; a token held back goes out with the next flush, the batch's last included.
    """

    def __init__(self, channel: Any, max_size: int) -> None:
        super().__init__(channel, max_size)
        self._tokens: Counter[str] = Counter()
        self._routed: list[str] = []

    def wake(self, queue: str) -> None:
        self._routed.append(queue)  # the message being published: counted once buffered

    def publish(self, message: Any, **kwargs: Any) -> Any:
        self._routed = []
        result = super().publish(message, **kwargs)
        self._tokens.update(self._routed)
        return result

    def flush(self) -> None:
        if self._tokens and self._failed is None and not self._aborted and not self._closed:
            for queue, count in self._tokens.items():
                wake = keys.wake(queue)
                self.pipeline.lpush(wake, *([1] * min(count, WAKE_TOKENS)))
                self.pipeline.ltrim(wake, 0, WAKE_TOKENS - 1)
            self._buffered += 2 * len(self._tokens)  # executed even with no message left
            self._tokens.clear()
        super().flush()

    def discard(self) -> None:
        self._tokens.clear()
        super().discard()
