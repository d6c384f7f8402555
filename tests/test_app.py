"""The Taskworks facade: building an app, adopting one, declaring tasks."""

from __future__ import annotations

import gc
import inspect
from typing import Any

import pytest
import redis
from celery import Celery
from celery import signals as celery_signals

import taskworks
from taskworks import InvalidInput, Taskworks, keys, load_settings
from taskworks.app import CELERY_OPTIONS
from taskworks.tasks import builtin


def test_public_surface_is_exactly_all() -> None:
    public = {
        name for name in dir(taskworks)
        if not name.startswith("_") and not inspect.ismodule(getattr(taskworks, name))
    }
    assert public == set(taskworks.__all__)
    for name in taskworks.__all__:
        assert getattr(taskworks, name) is not None


def test_built_app_has_the_seed_configuration(tw: Any) -> None:
    conf = tw.app.conf
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_acks_late
    assert conf.task_reject_on_worker_lost
    assert conf.result_expires == 3600
    assert conf.timezone == "UTC"
    assert [q.name for q in conf.task_queues] == [
        "default", "cpu_intensive", "io_intensive", "priority", "scheduled"]
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    # the patterns guide's three entries, and the workflow engine's recovery sweep
    assert set(conf.beat_schedule) == {"cleanup-expired-data", "daily-report", "health-check",
                                       "taskworks-workflows-sweep"}
    assert conf.beat_schedule["health-check"]["options"] == {"queue": "priority", "priority": 9}
    assert {builtin.HEALTH_CHECK, builtin.CLEANUP, builtin.DAILY_REPORT} <= set(tw.app.tasks)


def test_adopting_an_existing_app_keeps_its_tasks_and_configuration() -> None:
    theirs = Celery("theirs", broker="redis://127.0.0.1:1/3", set_as_current=False)
    theirs.conf.task_default_queue = "celery"
    theirs.conf.result_expires = 99

    @theirs.task(name="theirs.add", queue="celery")
    def add(x: int, y: int) -> int:
        return x + y

    before = theirs.tasks["theirs.add"]
    tw = Taskworks(app=theirs, settings=load_settings())
    assert tw.app is theirs
    assert tw.adopted
    assert theirs.tasks["theirs.add"] is before
    assert before.queue == "celery"
    assert theirs.conf.broker_url == "redis://127.0.0.1:1/3"
    assert theirs.conf.result_expires == 99
    names = [q.name for q in theirs.conf.task_queues]
    # their implicit default queue stays served, ours are added
    assert names[0] == "celery"
    assert {"default", "cpu_intensive", "priority"} <= set(names)
    assert builtin.HEALTH_CHECK in theirs.tasks
    assert add.apply(args=(2, 3)).get() == 5


def test_unknown_task_option_is_refused_at_declaration(tw: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        tw.task(retries=3)
    message = str(caught.value)
    assert "retries" in message
    for option in CELERY_OPTIONS | tw.runtime.option_names():
        assert option in message
    assert "retry_policy" in message  # middlewares declare theirs


def test_unknown_queue_and_bad_priority_are_refused_at_declaration(tw: Any) -> None:
    with pytest.raises(InvalidInput, match="queue: got 'nosuch'"):
        tw.task(queue="nosuch")
    with pytest.raises(InvalidInput, match="priority"):
        tw.task(priority=11)


def test_task_events_and_extended_results_are_off_unless_asked_for() -> None:
    conf = Taskworks(settings=load_settings()).app.conf
    assert not conf.worker_send_task_events
    assert not conf.task_send_sent_event
    assert not conf.result_extended  # arguments stay in the (redacted) journal only
    conf = Taskworks(settings=load_settings(worker={"task_events": True})).app.conf
    assert conf.worker_send_task_events
    assert conf.task_send_sent_event


def test_a_starting_worker_freezes_what_it_loaded(tw: Any) -> None:
    # the prefork parent's gc.collect() before each fork then skips the loaded app
    gc.unfreeze()
    try:
        celery_signals.worker_init.send(sender=None)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_countdown_past_the_visibility_timeout_waits_in_the_schedule(
    tw: Any, redis_client: redis.Redis,
) -> None:
    """Not refused any more: the message is kept by the durable schedule, not handed to
    a worker that would hold it past the visibility timeout (broker/schedule.py)."""
    limit = tw.settings.visibility_timeout
    result = tw.submit("tests.echo", ["x"], countdown=limit * 2)
    assert waiting(redis_client) == 0
    assert redis_client.hget(keys.SCHEDULE_IDS, result.id)
    with pytest.raises(InvalidInput) as caught:
        tw.submit("tests.echo", ["x"], countdown=-1)
    assert caught.value.field == "countdown"


def waiting(client: redis.Redis) -> int:
    """Messages in the default queue's lists (one per priority step)."""
    return sum(int(client.llen(key)) for key in client.scan_iter("default*")
               if client.type(key) == "list")
