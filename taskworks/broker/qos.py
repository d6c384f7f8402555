"""Acknowledgements and requeues of the messages a taskworks channel holds.

consume.lua records each message it takes in the consumer's held set (heartbeat.py);
this QoS acknowledges those with the channel's next take, after the task's journal row
when a group commit writes it (deferral.py), and leaves a message whose requeue the broker
refuses where it is instead of letting the error stop the worker.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis.exceptions import RedisError

from taskworks.broker import deferral
from taskworks.broker.heartbeat import sweep
from taskworks.logs import get_logger

__all__ = ["QoS", "log_refused"]

log = get_logger("taskworks.broker")


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """Acknowledgements of messages consume.lua took go with the channel's next take
    (one round trip for both); the rest is kombu's, on this consumer's held set."""

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag == self.channel._recorded_tag:
            # consume.lua recorded it already, in the step that popped it
            self.channel._recorded_tag = None
            virtual.QoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)  # basic_get and other paths: kombu's way

    def ack(self, delivery_tag: str) -> None:
        member = self.channel._held.pop(delivery_tag, None)
        if member is None:
            super().ack(delivery_tag)  # taken by kombu's path: in its unacked index
            return
        channel = self.channel
        # after the task's journal row, when a group commit writes it (deferral.py)
        if not deferral.park_ack(delivery_tag, channel.acknowledge_parked, member):
            channel.acknowledge(member)
        virtual.QoS.ack(self, delivery_tag)  # this process's bookkeeping only

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """A requeue the broker refuses (full: ``maxmemory``; gone) leaves the message where
        it is, held: the sweep brings it back once this consumer stops beating, or after
        the visibility timeout. kombu's own reject lets the error out, and Celery's
        consumer stops the whole worker on it."""
        if not requeue:
            self.ack(delivery_tag)
            return
        try:
            self.restore_by_tag(delivery_tag, leftmost=True)
            self.channel._held.pop(delivery_tag, None)
        except RedisError as exc:  # the transaction is all or nothing: nothing moved
            log_refused("requeue", delivery_tag, exc)
        virtual.QoS.ack(self, delivery_tag)  # this process's bookkeeping only

    def restore_unacked(self, client: Any = None) -> None:
        self.channel.flush_acks()  # finished ones are acknowledged, not given back
        super().restore_unacked(client)
        self.channel._held.clear()

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        member = self.channel._held.get(delivery_tag)
        if member is None:
            return super()._remove_from_indices(delivery_tag, pipe)
        with self.pipe_or_acquire(pipe) as pipe:
            return pipe.zrem(self.channel.held_key, member).hdel(self.unacked_key,
                                                                 delivery_tag)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        """kombu's sweep of its own unacked index (messages taken by kombu's path), then
        the held sets: messages held past the visibility timeout by live consumers."""
        super().restore_visible(start, num, interval)
        if (self._vrestore_count - 1) % (interval or 1):
            return
        with self.channel.conn_or_acquire() as client:
            sweep(client, [], unacked_key=self.unacked_key,
                  timeout=self.channel.consumer_timeout,
                  visibility=float(self.visibility_timeout))


def log_refused(what: str, delivery_tag: str, exc: BaseException) -> None:
    """The one line for an acknowledgement or requeue the broker refused (the message
    stays where it was: unacknowledged)."""
    log.warning(f"{what} refused by the broker; the message stays unacknowledged and "
                "comes back after the visibility timeout",
                delivery_tag=delivery_tag, error=f"{type(exc).__name__}: {exc}")
