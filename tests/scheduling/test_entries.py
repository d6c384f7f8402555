"""Periodic entries: the setting's validation (one line naming field, value and
expectation) and the entries beat fires, built from the Celery app's configuration."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from celery.schedules import BaseSchedule, crontab

from taskworks import settings, topology
from taskworks.errors import ConfigError
from taskworks.scheduling.entries import CONF_ENTRIES, BeatEntry, entries_of
from taskworks.settings import load_settings


def config_error(entry: dict[str, object]) -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TASKWORKS_BEAT_SCHEDULE", json.dumps({"nightly": entry}))
        with pytest.raises(ConfigError) as caught:
            load_settings()
    return str(caught.value)


def test_settings_still_export_the_entry() -> None:
    assert settings.BeatEntry is BeatEntry


def test_an_unknown_zone_is_one_line_naming_field_value_and_expectation() -> None:
    message = config_error({"task": "x.y", "cron": "0 2 * * *", "timezone": "Mars/Olympus"})
    assert ("beat_schedule.nightly.timezone: got 'Mars/Olympus': expected an IANA time zone "
            "name such as 'Europe/Berlin' or 'UTC'") in message.splitlines()[1]


@pytest.mark.parametrize(("fields", "expected"), [
    ({"missed": "later"}, "beat_schedule.nightly.missed: got 'later'"),
    ({"missed_window": 0}, "beat_schedule.nightly.missed_window: got 0"),
    ({"missed_window": 8 * 86_400}, "beat_schedule.nightly.missed_window: got 691200"),
    ({"timezone": "../etc/passwd"}, "beat_schedule.nightly.timezone: got '../etc/passwd'"),
])
def test_bad_policy_fields_are_refused(fields: dict[str, object], expected: str) -> None:
    assert expected in config_error({"task": "x.y", "every": 60, **fields})


def test_defaults() -> None:
    entry = BeatEntry(task="x.y", cron="0 2 * * *")
    assert (entry.timezone, entry.missed, entry.missed_window) == ("UTC", "skip", 3600.0)


def test_zoned_entries_are_fired_by_taskworks_and_left_out_of_celerys_schedule() -> None:
    loaded = load_settings(beat_schedule={
        "berlin": {"task": "x.y", "cron": "30 2 * * *", "timezone": "Europe/Berlin",
                   "missed": "run_once"},
        "last-day": {"task": "x.y", "cron": "0 0 L * *"},  # croniter's, not Celery's
        "utc": {"task": "x.y", "cron": "0 2 * * *", "queue": "scheduled", "priority": 7},
    })
    config = topology.celery_config(loaded)
    assert sorted(config["beat_schedule"]) == ["utc"]  # celery beat would fire them in UTC
    found = entries_of(config)
    assert list(found) == ["utc", "berlin", "last-day"]
    assert found["berlin"].entry.missed == "run_once"
    assert found["utc"].options == {"queue": "scheduled", "priority": 7}
    assert found["utc"].ours


def test_celery_entries_are_converted_in_the_apps_zone() -> None:
    conf = {
        "timezone": "America/New_York",
        CONF_ENTRIES: {"ours": BeatEntry(task="a.b", every=5)},
        "beat_schedule": {
            "interval": {"task": "t.i", "schedule": timedelta(minutes=2),
                         "options": {"priority": 3}},
            "seconds": {"task": "t.s", "schedule": 30.0},
            "crontab": {"task": "t.c", "schedule": crontab(minute="0", hour="1,13"),
                        "args": (1, 2)},
            # Celery ANDs day of month and day of week when both are restricted
            "both": {"task": "t.b", "schedule": crontab(minute=0, hour=9, day_of_month="1",
                                                        day_of_week="mon")},
            "custom": {"task": "t.x", "schedule": BaseSchedule()},  # e.g. solar
        },
    }
    found = entries_of(conf)
    assert list(found) == ["interval", "seconds", "crontab", "both", "ours"]  # no custom schedule
    assert found["interval"].entry.every == 120
    assert found["interval"].options == {"priority": 3}  # Celery's own scale, as given
    assert not found["interval"].ours
    assert found["seconds"].entry.every == 30
    cron = found["crontab"]
    assert (cron.entry.cron, cron.entry.timezone) == ("0 1,13 * * *", "America/New_York")
    assert cron.entry.args == [1, 2]
    both = found["both"]
    assert (both.entry.cron, both.day_or) == ("0 9 1 * 1", False)
    # from 2026-05-31: the first of a month that is a Monday is 2026-06-01, 09:00 EDT
    start = datetime(2026, 5, 31, tzinfo=UTC).timestamp()
    assert datetime.fromtimestamp(both.next_after(start), UTC) == \
        datetime(2026, 6, 1, 13, tzinfo=UTC)
    assert datetime.fromtimestamp(both.next_after(both.next_after(start)), UTC) == \
        datetime(2027, 2, 1, 14, tzinfo=UTC)
