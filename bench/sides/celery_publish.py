"""Stage a backlog on any Celery app: protocol-2 messages, pipelined (not timed)."""

from __future__ import annotations

from celery import Celery
from celery.utils import uuid


def publish(app: Celery, name: str, n: int, *, priority: int = 0) -> None:
    queue = app.amqp.queues[app.conf.task_default_queue]
    with app.producer_or_acquire() as producer:
        producer.maybe_declare(queue)
        with producer.batch(max_size=1000):
            for _ in range(n):
                task_id = uuid()
                headers, properties, body, _ = app.amqp.create_task_message(
                    task_id, name, (), {}, reply_to=app.thread_oid)
                producer.publish(body, exchange="", routing_key=queue.name, headers=headers,
                                 priority=priority, serializer="json", retry=False,
                                 delivery_mode=2, **properties)
