"""Scheduled tasks as operators see them (``tw.scheduled``): tasks submitted for real with
a countdown wait in the session Valkey's durable schedule; no worker runs them."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from celery.exceptions import TaskRevokedError

from taskworks import keys
from taskworks.broker import schedule
from taskworks.errors import InvalidInput
from taskworks.redaction import MASK
from taskworks.runtime import journal
from taskworks.scheduling.delayed import SCAN_LIMIT, summary_of


def test_list_show_cancel_and_summary(tw: Any, redis_client: redis.Redis) -> None:
    later = tw.submit("tests.echo", [1], {"api_token": "s3cret", "note": "kept"},
                      countdown=600, priority=7)
    soon = tw.submit("tests.echo", [2], countdown=30, queue="io_intensive")
    middle = tw.submit("tests.echo", [3], countdown=5400)
    scheduled = tw.scheduled

    listed = scheduled.list()
    assert [t.id for t in listed] == [soon.id, later.id, middle.id]  # due order
    first = listed[1]
    assert (first.name, first.queue, first.priority, first.retries) == \
        ("tests.echo", "default", 7, 0)
    assert first.due.tzinfo is not None
    assert 590 < (first.due - datetime.now(UTC)).total_seconds() <= 600
    assert [t.id for t in scheduled.list(queue="default")] == [later.id, middle.id]
    assert [t.id for t in scheduled.list(queue="default", offset=1)] == [middle.id]
    assert [t.id for t in scheduled.list(limit=1, offset=1)] == [later.id]
    assert scheduled.list(queue="nowhere") == []

    shown = scheduled.show(later.id)
    assert shown.args == [1]
    assert shown.kwargs == {"api_token": MASK, "note": "kept"}  # secrets never shown

    summary = scheduled.summary()
    assert summary.total == 3
    assert summary.by_queue == {"default": 2, "io_intensive": 1}
    assert summary.due_within == {"1m": 1, "1h": 2, "1d": 3}
    assert summary.next_due == listed[0].due
    assert summary.mover_lag == 0  # nothing overdue
    # seen from ten minutes on, with no mover running: two are overdue, the first by ~570 s
    assert 569 < summary_of(scheduled.client, now=time.time() + 600).mover_lag <= 571

    cancelled = scheduled.cancel(later.id)
    assert cancelled.kwargs == {"api_token": MASK, "note": "kept"}
    assert [t.id for t in scheduled.list()] == [soon.id, middle.id]
    assert scheduled.summary().by_queue == {"default": 1, "io_intensive": 1}
    with pytest.raises(TaskRevokedError, match="cancelled before it was due"):
        later.get(timeout=5)
    rows = journal.attempts(tw.store, later.id)
    assert [(r.state, r.attempt) for r in rows][-1] == ("revoked", 1)
    assert "cancelled before it was due" in (rows[-1].exc_message or "")
    assert rows[-1].kwargs == {"api_token": MASK, "note": "kept"}
    # the message is gone from every key: nothing is left to publish
    assert redis_client.hget(keys.SCHEDULE_IDS, later.id) is None
    assert redis_client.hlen(keys.SCHEDULE_ENVELOPES) == 2

    for call in (scheduled.cancel, scheduled.show):
        with pytest.raises(InvalidInput) as refused:
            call(later.id)
        assert refused.value.field == "task_id"
        assert "the id of a scheduled task" in refused.value.expected


def test_bad_arguments_name_the_parameter(tw: Any) -> None:
    for kwargs, field in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"),
                          ({"offset": -1}, "offset"), ({"queue": ""}, "queue")):
        with pytest.raises(InvalidInput) as refused:
            tw.scheduled.list(**kwargs)
        assert refused.value.field == field
    with pytest.raises(InvalidInput, match="task_id"):
        tw.scheduled.cancel("")


def test_a_queue_filter_reads_a_bounded_number_of_entries(tw: Any,
                                                        redis_client: redis.Redis) -> None:
    # SCAN_LIMIT tasks of another queue come first, then one of "default"
    due = time.time() + 300
    pipe = redis_client.pipeline(transaction=False)
    for i in range(SCAN_LIMIT):
        message = {"body": "", "headers": {"id": f"other-{i}", "task": "tests.echo"},
                   "properties": {"delivery_tag": f"other-{i}", "priority": 4}}
        _, script, *rest = schedule.add_command(message, "io_intensive", "io_intensive",
                                                due + i / 1000)
        pipe.eval(script, *rest)
    pipe.execute()
    last = tw.submit("tests.echo", [1], countdown=600)
    assert tw.scheduled.list(queue="default") == []  # beyond the entries a filter reads
    assert tw.scheduled.summary().by_queue == {"default": 1, "io_intensive": SCAN_LIMIT}
    assert tw.scheduled.list(limit=2, offset=SCAN_LIMIT - 1)[-1].id == last.id
    assert tw.scheduled.list(limit=1)[0].priority == 5
