"""Cron in a time zone (taskworks/scheduling/cron.py) across real daylight-saving changes:
each local time fires once, a time in the skipped hour fires at the first instant after
it, a time in the repeated hour fires once (its first occurrence)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from taskworks.scheduling import cron


def utc(*parts: int) -> float:
    return datetime(*parts, tzinfo=UTC).timestamp()


def fires(expression: str, zone: str, start: float, end: float) -> list[float]:
    """Every fire in (start, end], walking next_fire from ``start``."""
    found: list[float] = []
    moment = start
    while (moment := cron.next_fire(expression, zone, moment)) <= end:
        found.append(moment)
    return found


def shown(moments: list[float], zone: str) -> list[str]:
    """Fires as the entry's zone reads them, e.g. '03-29 03:00 CEST'."""
    return [datetime.fromtimestamp(m, cron.zone_of(zone)).strftime("%m-%d %H:%M %Z")
            for m in moments]


# Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC); 2026-10-25 03:00 CEST ->
# 02:00 CET (01:00 UTC). America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC);
# 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC).
CASES = [
    # the skipped hour: 02:30 does not exist and fires at 03:00, once
    ("Europe/Berlin", "30 2 * * *", utc(2026, 3, 28, 0), utc(2026, 3, 30, 12),
     ["03-28 02:30 CET", "03-29 03:00 CEST", "03-30 02:30 CEST"]),
    # 02:00, 02:30 and 03:00 are one instant: one fire
    ("Europe/Berlin", "*/30 * * * *", utc(2026, 3, 29, 0, 10), utc(2026, 3, 29, 1, 40),
     ["03-29 01:30 CET", "03-29 03:00 CEST", "03-29 03:30 CEST"]),
    ("Europe/Berlin", "0 1 * * *", utc(2026, 3, 28, 0), utc(2026, 3, 30, 12),
     ["03-29 01:00 CET", "03-30 01:00 CEST"]),
    # the repeated hour: 02:30 occurs twice and fires once, in summer time
    ("Europe/Berlin", "30 2 * * *", utc(2026, 10, 24, 0), utc(2026, 10, 26, 12),
     ["10-24 02:30 CEST", "10-25 02:30 CEST", "10-26 02:30 CET"]),
    ("Europe/Berlin", "*/30 * * * *", utc(2026, 10, 24, 23, 40), utc(2026, 10, 25, 2, 40),
     ["10-25 02:00 CEST", "10-25 02:30 CEST", "10-25 03:00 CET", "10-25 03:30 CET"]),
    ("Europe/Berlin", "0 1 * * *", utc(2026, 10, 24, 0), utc(2026, 10, 26, 12),
     ["10-25 01:00 CEST", "10-26 01:00 CET"]),
    ("America/New_York", "30 2 * * *", utc(2026, 3, 7, 12), utc(2026, 3, 9, 12),
     ["03-08 03:00 EDT", "03-09 02:30 EDT"]),
    ("America/New_York", "*/30 * * * *", utc(2026, 3, 8, 6, 10), utc(2026, 3, 8, 7, 40),
     ["03-08 01:30 EST", "03-08 03:00 EDT", "03-08 03:30 EDT"]),
    ("America/New_York", "0 1 * * *", utc(2026, 3, 7, 12), utc(2026, 3, 9, 12),
     ["03-08 01:00 EST", "03-09 01:00 EDT"]),
    # New York repeats 01:00-01:59
    ("America/New_York", "0 1 * * *", utc(2026, 10, 31, 12), utc(2026, 11, 2, 12),
     ["11-01 01:00 EDT", "11-02 01:00 EST"]),
    ("America/New_York", "*/30 * * * *", utc(2026, 11, 1, 4, 40), utc(2026, 11, 1, 7, 40),
     ["11-01 01:00 EDT", "11-01 01:30 EDT", "11-01 02:00 EST", "11-01 02:30 EST"]),
    ("America/New_York", "30 2 * * *", utc(2026, 10, 31, 12), utc(2026, 11, 2, 12),
     ["11-01 02:30 EST", "11-02 02:30 EST"]),
    # a half-hour change (Lord Howe: 02:00 -> 02:30): the gap's end is found to the minute
    ("Australia/Lord_Howe", "15 2 * * *", utc(2026, 10, 2, 12), utc(2026, 10, 5, 12),
     ["10-03 02:15 +1030", "10-04 02:30 +11", "10-05 02:15 +11"]),
]


@pytest.mark.parametrize(("zone", "expression", "start", "end", "expected"), CASES)
def test_each_local_time_fires_once_across_a_change(zone: str, expression: str, start: float,
                                                    end: float, expected: list[str]) -> None:
    found = fires(expression, zone, start, end)
    assert shown(found, zone) == expected
    # walking back from the end gives the same instants (the scheduler's catch-up path)
    assert cron.fires_before(expression, zone, end, start, limit=100) == found
    assert cron.fires_before(expression, zone, end, start, limit=2) == found[-2:]


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York"])
@pytest.mark.parametrize("expression", ["* * * * *", "*/30 * * * *", "15,45 0-3 * * *",
                                        "0 2 * * *", "59 1 * * *"])
def test_forward_and_backward_walks_agree_over_both_changes(zone: str, expression: str) -> None:
    for start in (utc(2026, 3, 7, 12), utc(2026, 10, 24, 12)):
        end = start + 3 * 86_400
        found = fires(expression, zone, start, end)
        assert found == sorted(set(found))  # strictly increasing: nothing fires twice
        assert cron.fires_before(expression, zone, end, start, limit=10_000) == found
        local = [datetime.fromtimestamp(m, cron.zone_of(zone)).replace(tzinfo=None)
                 for m in found]
        assert len(local) == len(set(local))  # no local time fires twice


def test_from_inside_the_second_pass_of_the_repeated_hour_nothing_fires_again() -> None:
    second_pass = utc(2026, 10, 25, 1, 15)  # 02:15 CET, after 02:15 CEST
    assert shown([cron.next_fire("30 2 * * *", "Europe/Berlin", second_pass)],
                 "Europe/Berlin") == ["10-26 02:30 CET"]
    assert cron.next_fire("*/30 * * * *", "Europe/Berlin", second_pass) == utc(2026, 10, 25, 2)
    # the two latest fires before it: 02:00 and 02:30 CEST, in the first pass
    assert cron.fires_before("*/30 * * * *", "Europe/Berlin", second_pass,
                             utc(2026, 10, 24), limit=2) == [utc(2026, 10, 25, 0),
                                                             utc(2026, 10, 25, 0, 30)]


def test_the_end_of_a_gap_is_the_instant_of_the_change() -> None:
    berlin = cron.zone_of("Europe/Berlin")
    for minute in (0, 1, 30, 59):
        assert cron.instant(datetime(2026, 3, 29, 2, minute), berlin) == utc(2026, 3, 29, 1)
    # a time that occurs twice: its first occurrence
    assert cron.instant(datetime(2026, 10, 25, 2, 30), berlin) == utc(2026, 10, 25, 0, 30)
    assert cron.instant(datetime(2026, 7, 1, 12), berlin) == utc(2026, 7, 1, 10)


def test_the_boundaries_are_half_open() -> None:
    at = utc(2026, 1, 5, 2)
    assert cron.next_fire("0 2 * * *", "UTC", at) == at + 86_400  # strictly after
    assert cron.fires_before("0 2 * * *", "UTC", at, at - 1, limit=5) == [at]  # until inclusive
    assert cron.fires_before("0 2 * * *", "UTC", at, at, limit=5) == []  # after exclusive


@pytest.mark.parametrize("expression", ["bad cron", "0 2 * * * *", "61 * * * *",
                                        "0 2 * * mon-xyz", "R * * * *", "H 2 * * *",
                                        "0 0 30 2 *", "@daily"])
def test_invalid_expressions_are_refused(expression: str) -> None:
    with pytest.raises(ValueError, match="expected five crontab fields like '0 2 \\* \\* \\*'"):
        cron.check(expression)


@pytest.mark.parametrize("expression", ["0 2 * * *", "*/15 9-17 * * mon-fri", "0 0 L * *",
                                        "0 9 * * 1#2", "30 2 1,15 jan,jul *"])
def test_valid_expressions_pass(expression: str) -> None:
    assert cron.check(expression) == expression
