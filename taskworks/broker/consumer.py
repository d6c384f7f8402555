"""The worker's broker consumer: Celery's, surviving the loss of a Redis/Valkey broker.

With Celery 5.7 and kombu 5.7 on Redis, a worker whose broker goes away (a restart, a
failover) exits with ``Unrecoverable error: AttributeError("'NoneType' object has no
attribute 'hostname'")`` instead of reconnecting, in two places
(tests/multihost/test_faults.py shows both):

1. Celery ``collect()``s the broken connection, which detaches its transport, then
   ``close()``s it. The Redis channel's first close was cut short by the dead socket, so
   the second one runs in full and tries to put the unacknowledged messages back through
   the detached transport.
2. A task that was running during the outage (a thread pool cannot cancel it) finishes
   after the reconnection, and its acknowledgement goes to its message's channel: the
   old one, whose transport is detached.

Neither can reach the broker through that connection anyway: the messages stay in the
broker's unacked set, and once the lost channel stops beating (broker/heartbeat.py)
they are handed out again (Celery itself
warns that such tasks "cannot be acknowledged after a connection loss"). So both become
a logged no-op, and the worker goes on reconnecting and consuming.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer

from taskworks.logs import get_logger

__all__ = ["ReconnectingConsumer"]

log = get_logger("taskworks.worker")


def _close_detached(close: Callable[[], Any]) -> Callable[[], None]:
    def close_detached() -> None:
        try:
            close()
        except AttributeError as error:  # the transport is gone: nothing left to close
            log.warning("broken broker connection closed without restoring its unacked "
                        "messages; they go back to their queues once its heartbeat lapses",
                        error=repr(error))

    return close_detached


def _settle_later(channel: Any) -> None:
    """Acks and rejects on a channel of a lost connection: leave the message unacked."""

    def settle_later(delivery_tag: Any, *args: Any, **kwargs: Any) -> None:
        log.warning("message not acknowledged: its broker connection was lost; it goes "
                    "back to its queue once the channel's heartbeat lapses",
                    delivery_tag=str(delivery_tag))

    channel.basic_ack = settle_later
    channel.basic_reject = settle_later
    stop_beating = getattr(channel, "stop_beating", None)
    if stop_beating is not None:  # ours: what it holds goes back after consumer_timeout
        stop_beating()


class ReconnectingConsumer(Consumer):  # type: ignore[misc]
    def on_connection_error_after_connected(self, exc: Exception) -> None:
        connection = self.connection
        if connection is not None:
            transport = getattr(connection, "_transport", None)
            for channel in list(getattr(transport, "channels", None) or ()):
                _settle_later(channel)
            connection.close = _close_detached(connection.close)
        super().on_connection_error_after_connected(exc)
