"""Cron in an IANA time zone: the fire times of a five-field expression, as UTC instants.

croniter walks naive local wall-clock times; each is mapped to an instant here, with
zoneinfo, because the wall clock jumps twice a year:

- spring forward (Europe/Berlin 2026-03-29, 02:00 -> 03:00): a local time in the gap
  does not exist; it fires at the first instant after the gap (03:00 local), once, however
  many cron times fell in the gap (``*/30`` has 02:00 and 02:30 there);
- fall back (2026-10-25, 03:00 -> 02:00): a local time in the repeated hour occurs twice;
  it fires once, at its first occurrence (fold=0).

Pure: no Redis, no clock; every function takes the instants it works from.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, CroniterError, croniter

__all__ = ["EXPECTED", "check", "fires_before", "instant", "next_fire", "zone_of"]

#: what a valid expression is, in the words of every error about one
EXPECTED = "five crontab fields like '0 2 * * *' (minute hour day-of-month month day-of-week)"
#: croniter's random ('R') and hashed ('H') fields: a schedule must be the same in every
#: process that computes it
_NOT_FIXED = re.compile(r"(?<![A-Za-z])[RH](?![A-Za-z])")
#: a guard on the walks below: only the repeated hour makes them skip candidates (at
#: most one per minute of it), so this is never reached by a valid expression
_MAX_STEPS = 10_000


def check(expression: str) -> str:
    """``expression`` if it is a valid five-field cron expression that fires at all; else
    ValueError saying what was expected."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"expected {EXPECTED}; got {len(fields)} field(s)")
    if _NOT_FIXED.search(expression):
        raise ValueError(f"expected {EXPECTED}, without random (R) or hashed (H) values")
    if not croniter.is_valid(expression):
        raise ValueError(f"expected {EXPECTED}")
    try:
        croniter(expression, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"expected {EXPECTED} that matches a date (this one never "
                         "fires)") from None
    except CroniterError as exc:
        raise ValueError(f"expected {EXPECTED} ({exc})") from None
    return expression


@lru_cache(maxsize=256)
def zone_of(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def instant(local: datetime, zone: ZoneInfo) -> float:
    """The epoch second a naive local wall-clock time fires at in ``zone``: its first
    occurrence when it occurs twice, the end of the gap when it does not exist."""
    first = local.replace(tzinfo=zone, fold=0)
    at = first.timestamp()
    if datetime.fromtimestamp(at, zone).replace(tzinfo=None) == local:
        return at
    # In a gap, fold=0 and fold=1 read the time with the offsets on either side of the
    # transition: one instant before it, one after. The transition is found to the second.
    other = local.replace(tzinfo=zone, fold=1).timestamp()
    low, high = int(min(at, other)), int(max(at, other)) + 1
    after = datetime.fromtimestamp(high, zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == after:
            high = middle
        else:
            low = middle
    return float(high)


def _local(moment: float, zone: ZoneInfo) -> tuple[datetime, timedelta]:
    """The naive local time of ``moment``, and how far the wall clock is behind the one
    of the first occurrence (nonzero only in the second pass of a repeated hour)."""
    aware = datetime.fromtimestamp(moment, zone)
    behind = timedelta(0)
    if aware.fold:
        first_offset = aware.replace(fold=0).utcoffset()
        offset = aware.utcoffset()
        if first_offset is not None and offset is not None:
            behind = first_offset - offset
    return aware.replace(tzinfo=None, fold=0), behind


def next_fire(expression: str, zone: str, after: float, *, day_or: bool = True) -> float:
    """The first fire instant strictly after ``after`` (epoch seconds)."""
    tz = zone_of(zone)
    start, _ = _local(after, tz)
    # in the second pass of a repeated hour, the cron times just after ``start`` fired
    # in the first pass (fold=0): they map to instants before ``after`` and are passed
    walk = croniter(expression, start, day_or=day_or)
    for _ in range(_MAX_STEPS):
        at = instant(walk.get_next(datetime), tz)
        if at > after:
            return at
    raise RuntimeError(f"no fire time of {expression!r} in {zone} after {after}")


def fires_before(expression: str, zone: str, until: float, after: float, limit: int, *,
                 day_or: bool = True) -> list[float]:
    """The fire instants in (after, until], oldest first; only the newest ``limit`` when
    there are more. Several cron times in one gap are one instant."""
    tz = zone_of(zone)
    local, behind = _local(until, tz)
    # get_prev is strictly before its start: one second past ``until`` (whole seconds),
    # plus the part of a repeated hour whose first pass is already behind ``until``
    start = local.replace(microsecond=0) + behind + timedelta(seconds=1)
    walk = croniter(expression, start, day_or=day_or)
    found: list[float] = []
    for _ in range(_MAX_STEPS + limit):
        if len(found) >= limit:
            break
        try:
            at = instant(walk.get_prev(datetime), tz)
        except CroniterBadDateError:
            break  # none earlier
        if at <= after:
            break
        if at > until or (found and found[-1] == at):
            continue
        found.append(at)
    found.reverse()
    return found
