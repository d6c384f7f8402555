"""The periodic scheduler (taskworks/scheduling/firing.py) on the session's real Valkey,
publishing through taskworks' real transport and its fence, driven by an injected clock:
missed-run policies, a leader change, a beat killed before it published, pause/resume."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from taskworks import keys, topology
from taskworks.errors import InvalidInput
from taskworks.scheduling import periodic
from taskworks.scheduling.entries import CONF_ENTRIES, RUN_ALL_MAX, BeatEntry, Periodic, entries_of
from taskworks.scheduling.firing import LATE_GRACE, PeriodicScheduler, format_time, plan
from taskworks.scheduling.leader import LeaderScheduler

QUEUE = "scheduled"
PROBE = "tests.periodic_probe"  # not registered: sent by name (send_task)


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


def entry(name: str = "probe", **fields: Any) -> Periodic:
    """A settings entry, as the scheduler gets it from the app's configuration."""
    fields.setdefault("task", PROBE)
    fields.setdefault("queue", QUEUE)
    return entries_of({CONF_ENTRIES: {name: BeatEntry(**fields)}})[name]


def messages(client: redis.Redis, queue: str = QUEUE) -> list[dict[str, Any]]:
    """Every message waiting in ``queue`` (all its priority lists), oldest first."""
    lists = [queue, *(f"{queue}\x06\x16{step}" for step in range(1, 10))]
    found = [json.loads(raw) for key in lists for raw in reversed(client.lrange(key, 0, -1))]
    for message in found:
        message["args"] = json.loads(base64.b64decode(message["body"]))[0]
    return found


def last_fire(client: redis.Redis, name: str = "probe") -> float | None:
    raw = client.hget(keys.BEAT_LAST_FIRE, name)
    return None if raw is None else float(raw)


@pytest.fixture
def send(tw: Any) -> Callable[[Periodic], None]:
    """Publish as beat does, through the sample app's transport (the fence's)."""
    def publish(p: Periodic) -> None:
        tw.app.send_task(p.entry.task, p.entry.args, p.entry.kwargs, **p.options)
    return publish


@pytest.fixture
def scheduler(redis_client: redis.Redis,
              send: Callable[[Periodic], None]) -> Callable[..., PeriodicScheduler]:
    def make(*entries: Periodic) -> PeriodicScheduler:
        return PeriodicScheduler(redis_client, {e.name: e for e in entries}, send)
    return make


def test_a_new_entry_starts_from_now_and_fires_each_due_time_once(
        redis_client: redis.Redis, scheduler: Callable[..., PeriodicScheduler]) -> None:
    beat = scheduler(entry(cron="*/5 * * * *"))
    start = utc(2026, 5, 4, 10, 1)
    wait = beat.tick(start)
    assert messages(redis_client) == []  # nothing is caught up for a new entry
    assert last_fire(redis_client) == start
    assert wait == pytest.approx(5.0)  # idle: the next due time is four minutes away

    due = utc(2026, 5, 4, 10, 5)
    assert beat.tick(due + 0.2) > 0
    assert beat.tick(due + 0.3) > 0
    assert beat.tick(due + 10) > 0
    assert len(messages(redis_client)) == 1
    assert last_fire(redis_client) == due  # the due time, not the moment it was sent
    beat.tick(due + 300.1)
    assert len(messages(redis_client)) == 2
    assert messages(redis_client)[0]["headers"]["task"] == PROBE


def test_the_wait_returned_is_the_time_to_the_next_due(
        redis_client: redis.Redis, scheduler: Callable[..., PeriodicScheduler]) -> None:
    beat = scheduler(entry(every=2.0))
    assert beat.tick(1000.0) == pytest.approx(2.0)
    assert beat.tick(1001.5) == pytest.approx(0.5)
    assert beat.tick(1002.0) == pytest.approx(2.0)  # fired; next at 1004
    assert len(messages(redis_client)) == 1


def _down_for_hours(redis_client: redis.Redis, beat: PeriodicScheduler) -> float:
    """An hourly Berlin entry last fired at 09:00 UTC; beat comes back at 14:20 UTC."""
    beat.tick(utc(2026, 5, 4, 8, 30))
    beat.tick(utc(2026, 5, 4, 9, 0, 1))
    assert len(messages(redis_client)) == 1
    redis_client.delete(QUEUE)
    return utc(2026, 5, 4, 14, 20)


def test_skip_sends_nothing_for_missed_fires_and_goes_on_from_now(
        redis_client: redis.Redis, scheduler: Callable[..., PeriodicScheduler]) -> None:
    beat = scheduler(entry(cron="0 * * * *", timezone="Europe/Berlin"))
    back = _down_for_hours(redis_client, beat)
    beat.tick(back)
    assert messages(redis_client) == []
    assert last_fire(redis_client) == utc(2026, 5, 4, 14)  # the latest, recorded as handled
    beat.tick(back + 60)
    assert messages(redis_client) == []
    beat.tick(utc(2026, 5, 4, 15, 0, 2))
    assert len(messages(redis_client)) == 1  # the schedule goes on


def test_run_once_sends_one_catch_up_fire(redis_client: redis.Redis,
                                          scheduler: Callable[..., PeriodicScheduler]) -> None:
    beat = scheduler(entry(cron="0 * * * *", timezone="Europe/Berlin", missed="run_once"))
    back = _down_for_hours(redis_client, beat)
    beat.tick(back)
    beat.tick(back + 1)
    assert len(messages(redis_client)) == 1  # five missed fires, one catch-up
    assert last_fire(redis_client) == utc(2026, 5, 4, 14)
    beat.tick(utc(2026, 5, 4, 15, 0, 2))
    assert len(messages(redis_client)) == 2


def test_run_all_sends_each_missed_fire_within_the_window(
        redis_client: redis.Redis, scheduler: Callable[..., PeriodicScheduler]) -> None:
    beat = scheduler(entry(cron="0 * * * *", timezone="Europe/Berlin", missed="run_all",
                           missed_window=3 * 3600, args=[1]))
    back = _down_for_hours(redis_client, beat)
    beat.tick(back)
    beat.tick(back + 1)
    # 10:00 to 14:00 were missed; 12:00, 13:00 and 14:00 are within three hours of 14:20
    assert len(messages(redis_client)) == 3
    assert last_fire(redis_client) == utc(2026, 5, 4, 14)


def test_run_all_is_bounded(redis_client: redis.Redis,
                            scheduler: Callable[..., PeriodicScheduler]) -> None:
    beat = scheduler(entry(every=1.0, missed="run_all", missed_window=3600))
    beat.tick(5000.0)
    beat.tick(5000.0 + 1000.5)  # a thousand missed within the window
    assert len(messages(redis_client)) == RUN_ALL_MAX
    assert last_fire(redis_client) == 6000.0


def test_a_fire_late_by_less_than_the_grace_is_sent_whatever_the_policy(
        redis_client: redis.Redis, scheduler: Callable[..., PeriodicScheduler]) -> None:
    beat = scheduler(entry(cron="0 * * * *"))
    beat.tick(utc(2026, 5, 4, 8, 30))
    beat.tick(utc(2026, 5, 4, 9) + LATE_GRACE - 1)  # e.g. after a leader change
    assert len(messages(redis_client)) == 1
    beat.tick(utc(2026, 5, 4, 10) + LATE_GRACE + 1)  # later than that: missed, skipped
    assert len(messages(redis_client)) == 1
    assert last_fire(redis_client) == utc(2026, 5, 4, 10)


def test_a_zoned_entry_fires_once_through_the_spring_forward_night(
        redis_client: redis.Redis, scheduler: Callable[..., PeriodicScheduler]) -> None:
    beat = scheduler(entry(cron="30 2 * * *", timezone="Europe/Berlin"),
                     entry("half-hourly", cron="*/30 * * * *", timezone="Europe/Berlin"))
    start = utc(2026, 3, 28, 23)  # 00:00 CET
    for minute in range(3 * 60 + 1):  # a tick a minute until 04:00 CEST
        beat.tick(start + minute * 60 + 0.5)
    fired = {name: float(raw) for name, raw in
             redis_client.hgetall(keys.BEAT_LAST_FIRE).items()}
    assert fired["probe"] == utc(2026, 3, 29, 1)  # 02:30 did not exist: 03:00 CEST
    # 00:30, 01:00, 01:30 CET, 03:00 (for 02:00, 02:30 and 03:00), 03:30, 04:00 CEST
    assert len(messages(redis_client)) == 1 + 6


def test_a_leader_change_neither_repeats_nor_loses_a_fire(
        redis_client: redis.Redis, scheduler: Callable[..., PeriodicScheduler]) -> None:
    first, second = scheduler(entry(every=60.0)), scheduler(entry(every=60.0))
    first.tick(1000.0)
    first.tick(1060.1)  # the old leader fires 1060
    second.tick(1060.2)  # the new one reads it and does not fire it again
    second.tick(1075.0)
    assert len(messages(redis_client)) == 1
    second.tick(1120.05)
    first.tick(1120.1)  # a leader that does not know it lost the lease: nothing twice
    assert len(messages(redis_client)) == 2
    assert last_fire(redis_client) == 1120.0


def test_two_beats_firing_the_same_due_time_at_once_publish_it_once(
        redis_client: redis.Redis, tw: Any) -> None:
    """The race the fence closes: the second beat reads, fires and records the due time
    while the first is between its read and its publish."""
    probe = entry(every=60.0)
    second: PeriodicScheduler

    def first_send(p: Periodic) -> None:
        second.tick(1060.2)  # runs inside the first's publish, before its message
        tw.app.send_task(p.entry.task, p.entry.args, p.entry.kwargs, **p.options)

    def plain_send(p: Periodic) -> None:
        tw.app.send_task(p.entry.task, p.entry.args, p.entry.kwargs, **p.options)

    first = PeriodicScheduler(redis_client, {"probe": probe}, first_send)
    second = PeriodicScheduler(redis_client, {"probe": probe}, plain_send)
    first.tick(1000.0)
    first.tick(1060.1)
    assert len(messages(redis_client)) == 1
    assert last_fire(redis_client) == 1060.0


def test_a_beat_killed_before_it_published_loses_nothing(
        redis_client: redis.Redis, scheduler: Callable[..., PeriodicScheduler]) -> None:
    def dies(p: Periodic) -> None:
        raise KeyboardInterrupt  # killed between computing the fire and publishing it

    doomed = PeriodicScheduler(redis_client, {"probe": entry(every=60.0)}, dies)
    doomed.tick(1000.0)
    with pytest.raises(KeyboardInterrupt):
        doomed.tick(1060.1)
    assert last_fire(redis_client) == 1000.0  # nothing recorded for 1060
    scheduler(entry(every=60.0)).tick(1070.0)  # the next leader
    assert len(messages(redis_client)) == 1
    assert last_fire(redis_client) == 1060.0


def test_a_failed_publish_is_retried_at_the_next_tick(
        redis_client: redis.Redis, send: Callable[[Periodic], None]) -> None:
    calls: list[float] = []

    def flaky(p: Periodic) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("broker away")
        send(p)

    beat = PeriodicScheduler(redis_client, {"probe": entry(every=60.0)}, flaky)
    beat.tick(1000.0)
    assert beat.tick(1060.1) == pytest.approx(1.0)  # logged, retried a second later
    assert messages(redis_client) == []
    beat.tick(1061.1)
    assert len(messages(redis_client)) == 1


def test_a_paused_entry_does_not_fire_and_resuming_skips_what_it_missed(
        redis_client: redis.Redis, scheduler: Callable[..., PeriodicScheduler], tw: Any) -> None:
    health = tw.app.conf.taskworks_beat_entries["health-check"]  # every 300 s
    beat = scheduler(Periodic("health-check", health, {"queue": QUEUE}))
    beat.tick(1000.0)
    paused = periodic.pause(tw.app.conf, redis_client, "health-check", now=1001.0)
    assert paused.paused
    assert paused.next_fire is None
    for moment in (1300.1, 1600.1, 1900.1):
        beat.tick(moment)
    assert messages(redis_client) == []
    resumed = periodic.resume(tw.app.conf, redis_client, "health-check", now=1950.0)
    assert not resumed.paused
    assert resumed.last_fire == 1900.0  # what fell due while paused: skipped
    assert resumed.next_fire == 2200.0
    beat.tick(1950.1)
    assert messages(redis_client) == []
    beat.tick(2200.1)
    assert len(messages(redis_client)) == 1
    # resuming an entry that is not paused moves nothing
    assert periodic.resume(tw.app.conf, redis_client, "health-check", now=2900.0) \
        .last_fire == 2200.0


def test_list_entries_shows_the_apps_entries_with_their_state(
        redis_client: redis.Redis, tw: Any) -> None:
    now = utc(2026, 5, 4, 10, 0, 30)
    redis_client.hset(keys.BEAT_LAST_FIRE, "daily-report", format_time(utc(2026, 5, 4, 2)))
    redis_client.sadd(keys.BEAT_PAUSED, "cleanup-expired-data")
    rows = {row.name: row for row in periodic.list_entries(tw.app.conf, redis_client, now)}
    assert set(rows) == {"cleanup-expired-data", "daily-report", "health-check",
                         "taskworks-workflows-sweep"}
    report = rows["daily-report"]
    assert (report.schedule, report.timezone, report.missed) == ("cron 0 2 * * *", "UTC",
                                                                 "skip")
    assert report.last_fire == utc(2026, 5, 4, 2)
    assert report.next_fire == utc(2026, 5, 5, 2)
    assert rows["cleanup-expired-data"].paused
    assert rows["cleanup-expired-data"].next_fire is None
    assert rows["health-check"].last_fire is None
    assert rows["taskworks-workflows-sweep"].schedule == "every 30s"  # added by taskworks
    with pytest.raises(InvalidInput, match="name: got 'nope', expected the name of a periodic"):
        periodic.pause(tw.app.conf, redis_client, "nope")


def test_plan_applies_each_policy() -> None:
    hourly = {m: entry(cron="0 * * * *", missed=m) for m in ("skip", "run_once", "run_all")}
    last, now = utc(2026, 5, 4, 9), utc(2026, 5, 4, 14, 20)
    skip = plan(hourly["skip"], last, now)
    assert (skip.skip_to, skip.fires, skip.missed) == (utc(2026, 5, 4, 14), [], 5)
    assert plan(hourly["run_once"], last, now).fires == [utc(2026, 5, 4, 14)]
    # the default window is an hour: only 14:00 is within it
    assert plan(hourly["run_all"], last, now).fires == [utc(2026, 5, 4, 14)]
    nothing_due = plan(hourly["skip"], last, utc(2026, 5, 4, 9, 30))
    assert (nothing_due.skip_to, nothing_due.fires) == (None, [])


# -- the beat scheduler itself: the lease, and how it publishes -----------------------
@pytest.fixture
def leaders(tw: Any) -> Iterator[Callable[[], LeaderScheduler]]:
    made: list[LeaderScheduler] = []

    def make() -> LeaderScheduler:
        made.append(LeaderScheduler(app=tw.app))
        return made[-1]

    yield make
    for scheduler in made:
        scheduler.close()


def test_a_follower_takes_over_from_the_recorded_last_fire(
        redis_client: redis.Redis, leaders: Callable[[], LeaderScheduler]) -> None:
    clock = [1000.0]
    a, b = leaders(), leaders()
    for scheduler in (a, b):
        scheduler.periodic.entries = {"probe": entry(every=60.0, priority=9)}
        scheduler.periodic.clock = lambda: clock[0]
    a.tick()
    b.tick()  # stands by
    clock[0] = 1060.1
    a.tick()
    b.tick()
    assert len(messages(redis_client)) == 1
    redis_client.delete(keys.beat_leader("taskworks"))  # the leader died: its lease lapsed
    clock[0] = 1060.3
    b.tick()  # takes over: 1060 was fired already
    clock[0] = 1120.2
    b.tick()
    a.tick()  # the old one is a follower now
    found = messages(redis_client)
    assert len(found) == 2
    assert {m["properties"]["priority"] for m in found} == {topology.broker_priority(9)}


def test_beat_sends_registered_tasks_with_apply_async_and_converts_priorities_otherwise(
        redis_client: redis.Redis, leaders: Callable[[], LeaderScheduler]) -> None:
    scheduler = leaders()
    scheduler.send(entry(every=60, priority=2))  # unregistered: send_task, turned here
    scheduler.send(entry(every=60))  # unregistered, no priority: the settings' default (5)
    scheduler.send(entry("tick", task="tests.beat_tick", every=1, priority=9))  # apply_async
    priorities = [m["properties"]["priority"] for m in messages(redis_client)]
    assert sorted(priorities) == sorted([topology.broker_priority(2),
                                         topology.broker_priority(5),
                                         topology.broker_priority(9)])
