"""Many calls of one task sent in one go (``tw.submit_many``): Celery's own message
format and publish signals, without Celery's per-message routing and settings lookups,
through one Redis pipeline per batch.

What Celery's ``send_task_message`` does per message is done once per batch here: the
route (by task name and queue; function routers that look at arguments are not
consulted), the exchange, the delivery mode and the settings read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from celery import Celery
from celery import signals as celery_signals
from celery.utils import uuid
from celery.utils.saferepr import saferepr
from kombu import Queue

from taskworks.errors import InvalidInput

__all__ = ["publish_many", "split_call"]

#: not list | tuple: that builds a new union per call
_SEQUENCES = (list, tuple)


def split_call(index: int, item: Any) -> tuple[list[Any], dict[str, Any]]:
    """One item of ``submit_many`` as (args, kwargs): a list or tuple of positional
    arguments, a dict of keyword arguments, or a 2-tuple ``(args, kwargs)``."""
    if (isinstance(item, tuple) and len(item) == 2
            and isinstance(item[0], _SEQUENCES) and isinstance(item[1], dict)):
        return list(item[0]), item[1]
    if isinstance(item, _SEQUENCES):
        return list(item), {}
    if isinstance(item, dict):
        return [], item
    raise InvalidInput(f"items[{index}]", item,
                       "a list of arguments, a dict of keyword arguments or (args, kwargs)")


def publish_many(app: Celery, task: Any, calls: list[tuple[list[Any], dict[str, Any]]], *,
                 queue: str | None, priority: int | None, batch_size: int,
                 eta: datetime | None = None, expires: datetime | None = None) -> list[str]:
    """Publish one message per call of ``task`` (``priority`` on the broker's scale, or
    None for the route's); returns the task ids, in order. A ``task-sent`` event goes
    with each message when the app sends them and a monitor is subscribed."""
    if not calls:
        return []
    name = task.name
    route = app.amqp.router.route({"queue": queue} if queue else {}, name, (), {},
                                  task_type=task)
    if priority is None:
        priority = route.get("priority")
    target: Queue = route["queue"]
    conf = app.conf
    # like Celery's send_task_message: a direct exchange becomes the anonymous exchange
    if target.exchange is None or target.exchange.type == "direct":
        exchange, routing_key = "", target.name
    else:
        exchange = target.exchange.name
        routing_key = route.get("routing_key") or target.routing_key
    delivery_mode = (target.exchange.delivery_mode if target.exchange else None) \
        or conf.task_default_delivery_mode
    send_event = bool(conf.task_send_sent_event)
    current = app.current_worker_task  # called from inside a task: link the lineage
    parent_id = current.request.id if current else None
    root_id = (current.request.root_id or parent_id) if current else None
    amqp, ids = app.amqp, []
    # read once: Celery's settings lookups cost more than building a message
    serializer, compression = conf.task_serializer, conf.task_compression
    reply_to, time_limit, soft_time_limit = (app.thread_oid, task.time_limit,
                                             task.soft_time_limit)
    levels = conf.task_repr_maxlevels  # as_task_v2 would look it up twice per message
    args_max, kwargs_max = amqp.argsrepr_maxsize, amqp.kwargsrepr_maxsize
    with app.producer_or_acquire() as producer:
        producer.maybe_declare(target)
        client: Any = getattr(producer.channel, "client", None)
        if send_event and hasattr(client, "pubsub_numpat"):
            # Redis pub/sub drops what nobody listens to: with no monitor subscribed,
            # the task-sent events would cost half the time and reach no one
            pipe = client.pipeline(transaction=False)
            pipe.pubsub_numpat()
            pipe.pubsub_channels(f"*{conf.event_exchange}*")
            patterns, channels = pipe.execute()
            send_event = bool(patterns or channels)
        events = app.events.Dispatcher(connection=producer.connection, enabled=False) \
            if send_event else None
        # kombu's transport-owned batch: its Redis publishes go through one pipeline
        with producer.batch(max_size=batch_size * (2 if send_event else 1)):
            for args, kwargs in calls:
                task_id = uuid()
                headers, properties, body, sent = amqp.create_task_message(
                    task_id, name, args, kwargs, reply_to=reply_to,
                    time_limit=time_limit, soft_time_limit=soft_time_limit,
                    create_sent_event=send_event, root_id=root_id, parent_id=parent_id,
                    ignore_result=task.ignore_result, eta=eta, expires=expires,
                    argsrepr=saferepr(args, args_max, maxlevels=levels),
                    kwargsrepr=saferepr(kwargs, kwargs_max, maxlevels=levels),
                )
                if celery_signals.before_task_publish.receivers:
                    celery_signals.before_task_publish.send(
                        sender=name, body=body, exchange=exchange, routing_key=routing_key,
                        declare=[target], headers=headers, properties=properties,
                        retry_policy={})
                producer.publish(
                    body, exchange=exchange, routing_key=routing_key, retry=False,
                    serializer=serializer, compression=compression,
                    headers=headers, priority=priority or 0,
                    delivery_mode=delivery_mode, **properties,
                )
                if celery_signals.after_task_publish.receivers:
                    celery_signals.after_task_publish.send(
                        sender=name, body=body, headers=headers, exchange=exchange,
                        routing_key=routing_key)
                if events is not None:
                    sent.update(queue=target.name, exchange=exchange, routing_key=routing_key)
                    events.publish("task-sent", sent, producer)
                ids.append(task_id)
    return ids
