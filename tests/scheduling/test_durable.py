"""Delayed tasks wait in the durable schedule, not in workers; deadlines to start.

Real `taskworks worker` processes on the session's Valkey, with a visibility timeout of
5 s: under Celery's own behaviour a worker holding a task due in a minute would see it
handed to another worker every 5 s.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import pytest
import redis
from sqlalchemy import select

from taskworks import keys
from taskworks.errors import InvalidInput
from taskworks.store.tables import JournalEntry
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess

#: the workers' settings: a visibility timeout far below the countdowns
SHORT_VISIBILITY = {"TASKWORKS_VISIBILITY_TIMEOUT": "5", "TASKWORKS_WORKER__TIME_LIMIT": "4",
                    "TASKWORKS_WORKER__SOFT_TIME_LIMIT": "3"}


#: see the comment where it is used
START_LATENESS_BOUND = 60.0


def _rows(tw: Any, task_id: str) -> list[JournalEntry]:
    with tw.store.session() as session:
        return list(session.scalars(select(JournalEntry).where(JournalEntry.task_id == task_id)
                                    .order_by(JournalEntry.id)))


def _rss(worker: WorkerProcess) -> int:
    return int(psutil.Process(worker.proc.pid).memory_info().rss)


class MoverLag:
    """Samples, from a thread, how late the most overdue scheduled message is: the
    schedule's own lateness, which no amount of load on the workers adds to."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.worst = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            oldest = self.client.zrange(keys.SCHEDULE, 0, 0, withscores=True)
            if oldest:
                self.worst = max(self.worst, time.time() - float(oldest[0][1]))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.worst


@pytest.mark.timeout(300)
def test_ten_thousand_tasks_due_over_a_minute_run_once_on_time(
        tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    total = 10_000
    quiet = {**SHORT_VISIBILITY, "TASKWORKS_LOG_LEVEL": "WARNING"}  # no line per task
    workers = [start_worker(["default"], env=quiet) for _ in range(2)]
    tw.app.tasks["tests.on_time"].apply_async((-1, time.time()))  # both warm before measuring
    wait_for(lambda: redis_client.hexists("tests:on-time", "-1"), what="the warm-up task")
    rss_before = [_rss(w) for w in workers]
    first_due = time.time() + 8  # sending takes a second or two, more on a busy machine
    chunk = 100  # a due time every 0.6 s, a chunk sent per due time (submit_many)
    for start in range(0, total, chunk):
        due = first_due + 60 * start / total
        tw.submit_many("tests.on_time", [[index, due] for index in range(start, start + chunk)],
                       eta=datetime.fromtimestamp(due, UTC))
    sent = time.time()
    assert sent < first_due, f"sending took {sent - first_due + 8:.1f}s: the first were due"
    # the workers hold none of them: they are in the schedule
    assert redis_client.zcard(keys.SCHEDULE) >= total - 200
    lag = MoverLag(redis_client)
    wait_for(lambda: redis_client.hlen("tests:on-time") >= total + 1, timeout=150,
             interval=1, what="every task to run")
    mover_lag = lag.stop()
    time.sleep(6)  # past the visibility timeout once more: a second run would show
    runs = redis_client.hgetall("tests:on-time:runs")
    twice = {k: v for k, v in runs.items() if v != "1"}
    assert not twice, f"{len(twice)} ran more than once"
    by_index = {int(k): float(v) for k, v in redis_client.hgetall("tests:on-time").items()}
    del by_index[-1]
    late = sorted(by_index.values())
    assert len(late) == total
    assert late[0] >= 0, f"a task started {-late[0]:.3f}s before its due time"
    p99 = statistics.quantiles(late, n=100)[98]
    print(f"lateness: p50 {statistics.median(late):.3f}s, p99 {p99:.3f}s, max {late[-1]:.3f}s;"
          f" mover lag at most {mover_lag:.3f}s")
    # Each due message was in its queue within a second of its due time, however busy
    # the machine. When it started also depends on the workers having the CPU for 167
    # tasks/s: on its own the test measured p99 0.40 s (docs/scheduling.md), but here the
    # two cores run the rest of the suite too, so start lateness is only reported (and
    # bounded far above what a working schedule gives, below what a broken one does:
    # a message found only by kombu's visibility sweep)
    assert mover_lag <= 1.0, f"a due message waited {mover_lag:.3f}s in the schedule"
    assert p99 <= START_LATENESS_BOUND, f"p99 start lateness {p99:.3f}s"
    grown = [(_rss(w) - before) / 2**20 for w, before in zip(workers, rss_before, strict=True)]
    print(f"worker RSS growth (MiB): {grown}")
    assert max(grown) < 16, f"worker memory grew {grown} MiB"
    assert redis_client.zcard(keys.SCHEDULE) == 0


def test_a_delayed_task_is_journaled_scheduled_and_runs_when_due(
        tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker(["default"], env=SHORT_VISIBILITY)
    due = datetime.now(UTC) + timedelta(seconds=7)  # past the 5 s visibility timeout
    result = tw.submit("tests.echo", [7], eta=due)
    [row] = wait_for(lambda: _rows(tw, result.id), what="the scheduled row")
    assert row.state == "scheduled"
    assert due.isoformat()[:19] in (row.result or "")
    assert result.get(timeout=30) == 7
    assert datetime.now(UTC) >= due
    states = [r.state for r in wait_for(lambda: _rows(tw, result.id)[1:] and _rows(tw, result.id),
                                        what="the success row")]
    assert states == ["scheduled", "success"]


def test_a_task_not_started_before_its_deadline_is_expired_not_run(
        tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]) -> None:
    late = tw.submit("tests.slow_mark", ["expired:a", 0], expires=0.5)
    delayed = tw.submit("tests.slow_mark", ["expired:b", 0], countdown=1, expires=1.5)
    soon = tw.app.tasks["tests.must_start_soon"].apply_async(("expired:c",))  # start_within 1
    fine = tw.submit("tests.slow_mark", ["expired:d", 0], expires=60)
    time.sleep(2)  # no worker yet: every deadline but the last passes
    start_worker(["default"])
    assert fine.get(timeout=30) == 1
    for result in (late, delayed, soon):
        wait_for(lambda r=result: r.state == "REVOKED", what="expired tasks to be revoked")
        rows = wait_for(lambda r=result: _rows(tw, r.id), what="the expired row")
        assert [r.state for r in rows if r.state != "scheduled"] == ["expired"]
    assert [redis_client.get(f"expired:{k}") for k in "abc"] == [None, None, None]


def test_bad_deadlines_are_refused_naming_the_field(tw: Any, redis_client: redis.Redis) -> None:
    with pytest.raises(InvalidInput) as caught:
        tw.submit("tests.echo", [1], countdown=10, expires=5)
    assert caught.value.field == "expires"
    with pytest.raises(InvalidInput) as caught:
        tw.submit("tests.echo", [1], eta=datetime(2030, 1, 1))
    assert caught.value.field == "eta"
    with pytest.raises(InvalidInput) as caught:
        tw.submit("tests.echo", [1], countdown=float("nan"))
    assert caught.value.field == "countdown"
    with pytest.raises(InvalidInput):
        tw.task(name="tests.bad_deadline", start_within=0)(lambda: None)
    assert redis_client.zcard(keys.SCHEDULE) == 0
