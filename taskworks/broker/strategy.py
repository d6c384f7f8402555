"""Celery's task strategy, with acknowledgements and requeues the broker refuses kept
unacknowledged and logged, never fatal to the worker.

When the runtime cannot record an outcome it requeues the message (``Reject(requeue=
True)``, docs/runtime.md). kombu's Redis transport requeues in one MULTI/EXEC; a broker
that refuses writes (Valkey at ``maxmemory`` with ``noeviction``, a replica turned
read-only) aborts it, so nothing moved and the message is still in kombu's unacked index,
where the visibility timeout brings it back. But the refusal is a Redis ``ResponseError``,
which Celery does not count among the errors a message's ``ack``/``reject`` may raise: it
reaches the event loop and Celery stops the whole worker ("Unrecoverable error"). And
were it only logged, kombu's QoS would still count the message as in flight, so a worker
with prefetch 1 would never take another.

Taskworks' own transport handles this in its QoS (broker/qos.py). For an adopted app that
keeps kombu's transport, this strategy gives the consumer's channel the same behaviour the
first time a task message comes through it: its QoS's ``reject`` and ``ack`` keep a
refused message where the broker left it (unacknowledged), log one line, and release its
place in this process's prefetch count. Celery's own handler does the rest of the work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis.exceptions import ResponseError

from taskworks.broker.qos import QoS, log_refused

__all__ = ["CELERY_DEFAULT", "STRATEGY", "refusal_tolerant", "tolerate_refusals"]

#: what a task class names when nobody chose another strategy
CELERY_DEFAULT = "celery.worker.strategy:default"
STRATEGY = f"{__name__}:refusal_tolerant"
#: set on a QoS whose ``ack`` and ``reject`` were made tolerant
_MARK = "_taskworks_tolerant"


def refusal_tolerant(task: Any, app: Any, consumer: Any, **kwargs: Any) -> Any:
    """Celery's default strategy for ``task``, whose messages' channel first learns to
    keep what the broker refuses to acknowledge or requeue."""
    from celery.worker.strategy import default  # the worker's module: clients never load it

    handler = default(task, app, consumer, **kwargs)

    def task_message_handler(message: Any, *args: Any, **options: Any) -> Any:
        tolerate_refusals(message.channel)
        return handler(message, *args, **options)

    return task_message_handler


def tolerate_refusals(channel: Any) -> None:
    """Make the ``ack`` and ``reject`` of kombu's Redis QoS on ``channel`` keep a message
    the broker refuses to move (once per channel; other transports are left as they are)."""
    qos = getattr(channel, "qos", None)
    if (not isinstance(qos, kombu_redis.QoS) or isinstance(qos, QoS)
            or getattr(qos, _MARK, False)):
        return
    qos.ack = _kept_if_refused(qos, qos.ack, "acknowledgement")
    qos.reject = _kept_if_refused(qos, qos.reject, "requeue")
    setattr(qos, _MARK, True)


def _kept_if_refused(qos: Any, settle: Callable[..., None], what: str) -> Callable[..., None]:
    def kept(delivery_tag: str, *args: Any, **kwargs: Any) -> None:
        try:
            settle(delivery_tag, *args, **kwargs)
        except ResponseError as exc:  # MULTI/EXEC aborted: the message did not move
            log_refused(what, delivery_tag, exc)
            virtual.QoS.ack(qos, delivery_tag)  # this process's bookkeeping only

    return kept
