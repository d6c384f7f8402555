"""Queue topology and the Celery configuration derived from settings.

Priorities: taskworks speaks the patterns guide's (and AMQP's) language, 0 to 9 with 9 the most
urgent. Kombu's Redis transport serves its lowest number first, so ``broker_priority``
flips the scale at the boundary; every level is its own list (``priority_steps``).
"""

from __future__ import annotations

from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Any

from celery.schedules import crontab
from kombu import Exchange, Queue

from taskworks.broker.consumer import ReconnectingConsumer
from taskworks.broker.transport import transport_for
from taskworks.errors import InvalidInput
from taskworks.pool import POOL
from taskworks.scheduling.entries import CONF_DEFAULT_PRIORITY, CONF_ENTRIES, BeatEntry
from taskworks.settings import Settings

__all__ = ["MAX_PRIORITY", "beat_schedule", "broker_priority", "celery_config", "queues",
           "restore_interval", "route_for", "user_priority"]

MAX_PRIORITY = 9


def broker_priority(priority: int) -> int:
    """taskworks priority (9 most urgent) to kombu's Redis priority (0 served first)."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise InvalidInput("priority", priority, "an integer from 0 (least urgent) to 9 (most)")
    return MAX_PRIORITY - priority


def user_priority(raw: int) -> int:
    """Inverse of broker_priority, for messages read back from the broker."""
    return MAX_PRIORITY - raw


def restore_interval(visibility_timeout: int) -> int:
    return max(1, min(10, visibility_timeout // 3))


def queues(settings: Settings) -> list[Queue]:
    return [
        Queue(name, Exchange(name), routing_key=name, queue_arguments={"x-max-priority": 10})
        for name in settings.queues
    ]


def route_for(settings: Settings, task_name: str) -> str | None:
    """The queue a task name is routed to by the glob routes (first match wins)."""
    for glob, queue in settings.routes.items():
        if fnmatchcase(task_name, glob):
            return queue
    return None


def _schedule(entry: BeatEntry) -> Any:
    """The entry's schedule as Celery's beat reads it; None when Celery cannot read it the
    same way (a zone other than UTC, or cron syntax its crontab lacks such as ``L``)."""
    if entry.every is not None:
        return timedelta(seconds=entry.every)
    assert entry.cron is not None
    if entry.timezone != "UTC":
        return None
    try:
        return crontab.from_string(entry.cron)
    except (ValueError, IndexError, KeyError):
        return None


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The entries in Celery's format. taskworks beat fires ``settings.beat_schedule``
    itself (zones, missed runs: scheduling/); this is for Celery's own tools."""
    schedule: dict[str, dict[str, Any]] = {}
    for name, entry in settings.beat_schedule.items():
        when = _schedule(entry)
        if when is None:
            continue
        options: dict[str, Any] = {}
        if entry.queue:
            options["queue"] = entry.queue
        if entry.priority is not None:
            options["priority"] = entry.priority
        schedule[name] = {
            "task": entry.task, "schedule": when,
            "args": tuple(entry.args), "kwargs": entry.kwargs, "options": options,
        }
    return schedule


def celery_config(settings: Settings) -> dict[str, Any]:
    """Everything taskworks sets on a Celery app it owns."""
    routes = {glob: {"queue": queue} for glob, queue in settings.routes.items()}
    config: dict[str, Any] = {
        "broker_url": settings.effective_broker_url,
        "result_backend": settings.effective_result_backend,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout,
            # kombu sweeps for expired unacked messages every interval*throttle seconds
            # (100 s by default); sweep every few seconds so a lost task waits little
            # longer than the visibility timeout itself
            "unacked_restore_interval": restore_interval(settings.visibility_timeout),
            "unacked_restore_throttle": 1,
            # the lock one sweeper holds while it restores; kombu keeps it 300 s, so a
            # worker SIGKILLed mid-sweep stopped every restore for five minutes. Each
            # message is restored in its own WATCH transaction, so a sweep that outlives
            # the lock and overlaps the next one restores nothing twice
            "unacked_mutex_expire": 2 * restore_interval(settings.visibility_timeout) + 5,
            "priority_steps": list(range(MAX_PRIORITY + 1)),
            # our transport trims the undeliverable list to this on every push
            "undeliverable_max": settings.retention.undeliverable_max,
        },
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        "result_expires": settings.result_expires,
        # not extended: the journal records name, worker, queue and (redacted) arguments;
        # extended results would copy the arguments, secrets included, into Redis, and
        # cost a settings lookup and a bigger payload on every result write
        "result_extended": False,
        "task_queues": queues(settings),
        "task_default_queue": settings.default_queue,
        "task_default_exchange": settings.default_queue,
        "task_default_routing_key": settings.default_queue,
        "task_routes": (routes,),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "task_soft_time_limit": settings.worker.soft_time_limit,
        "task_time_limit": settings.worker.time_limit,
        "task_track_started": settings.worker.track_started,
        "worker_prefetch_multiplier": 1,
        "worker_max_tasks_per_child": settings.worker.max_tasks_per_child,
        "worker_max_memory_per_child": settings.worker.max_memory_per_child,
        "worker_send_task_events": settings.worker.task_events,
        "task_send_sent_event": settings.worker.task_events,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_log_color": False,
        # a task whose connection dropped is redelivered; cancelling it avoids a twin run
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Celery's consumer, minus a crash when a Redis broker goes away (broker/consumer.py)
        "worker_consumer": ReconnectingConsumer,
        # prefork whose time-limit timers do not pile up in the parent (pool.py)
        "worker_pool": POOL,
        # Celery's format (``celery beat`` reads it, cron in UTC), and the entries with their
        # zone and missed-run policy, which taskworks beat fires (scheduling/entries.py)
        "beat_schedule": beat_schedule(settings),
        CONF_ENTRIES: dict(settings.beat_schedule),
        CONF_DEFAULT_PRIORITY: settings.worker.default_priority,
        "imports": list(settings.imports),
    }
    transport = transport_for(settings.effective_broker_url)
    if transport is not None:  # the same Redis commands, fewer Python objects per task
        config["broker_transport"] = transport
    return config
