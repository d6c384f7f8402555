"""Periodic entries: what fires, when, in which time zone, and what a missed fire does.

``BeatEntry`` is the setting (``beat_schedule``; taskworks.settings re-exports it). ``Periodic``
is what the scheduler and the ``periodic`` commands work on: a ``BeatEntry`` with its
name and the options it is sent with, built from the Celery app's configuration
(``entries_of``), so that the entries taskworks adds (the workflow sweep) and those of an
adopted app's own ``beat_schedule`` are scheduled the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from taskworks.logs import get_logger
from taskworks.scheduling import cron

__all__ = ["CONF_DEFAULT_PRIORITY", "CONF_ENTRIES", "MISSED_WINDOW_MAX", "RUN_ALL_MAX",
           "BeatEntry", "Missed", "Periodic", "entries_of"]

log = get_logger("taskworks.beat")

Missed = Literal["skip", "run_once", "run_all"]
#: ``run_all`` fires at most this many missed times in one catch-up (the newest ones)
RUN_ALL_MAX = 100
#: the longest ``missed_window`` (7 days)
MISSED_WINDOW_MAX = 7 * 86_400.0
#: keys of the Celery app's configuration holding the settings' entries and the default
#: priority (topology.celery_config): Celery's own ``beat_schedule`` cannot carry a zone
CONF_ENTRIES = "taskworks_beat_entries"
CONF_DEFAULT_PRIORITY = "taskworks_default_priority"


class BeatEntry(BaseModel):
    """One periodic task: ``every`` seconds, or ``cron`` (five fields) in ``timezone``.

    ``missed`` says what a fire that was due while no beat ran does: ``skip`` (none is
    sent; the schedule goes on from now), ``run_once`` (one catch-up fire now), or
    ``run_all`` (each missed fire within ``missed_window`` seconds, at most RUN_ALL_MAX).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str
    every: float | None = Field(default=None, gt=0)
    cron: str | None = None
    #: the IANA zone ``cron`` is read in (``every`` needs none)
    timezone: str = "UTC"
    missed: Missed = "skip"
    #: how far back ``run_all`` catches up, seconds
    missed_window: float = Field(default=3600.0, gt=0, le=MISSED_WINDOW_MAX)
    queue: str | None = None
    priority: int | None = Field(default=None, ge=0, le=9)
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str | None) -> str | None:
        return None if value is None else cron.check(value)

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone name such as 'Europe/Berlin' or "
                             "'UTC'") from None
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> BeatEntry:
        if (self.every is None) == (self.cron is None):
            raise ValueError("give exactly one of 'every' (seconds) or 'cron'")
        return self


@dataclass(frozen=True)
class Periodic:
    """An entry as the scheduler fires it. ``options`` go to ``apply_async``/``send_task``
    as Celery's beat would pass them; ``ours``: from taskworks settings, so an
    ``options["priority"]`` is on taskworks' 0-9 scale (9 most urgent)."""

    name: str
    entry: BeatEntry
    options: dict[str, Any] = field(default_factory=dict)
    ours: bool = True
    #: cron's rule (day of month OR day of week); Celery's crontab ANDs them
    day_or: bool = True

    @property
    def schedule(self) -> str:
        every = self.entry.every
        if every is not None:
            return f"every {int(every) if every.is_integer() else every}s"
        return f"cron {self.entry.cron}"

    def next_after(self, moment: float) -> float:
        """The first due time after ``moment``, a due time of this entry (its last fire);
        for ``every`` the times are ``moment + k * every``."""
        entry = self.entry
        if entry.every is not None:
            return moment + entry.every
        assert entry.cron is not None
        return cron.next_fire(entry.cron, entry.timezone, moment, day_or=self.day_or)

    def due_between(self, last: float, until: float, limit: int) -> list[float]:
        """The due times in (last, until], oldest first: the newest ``limit`` of them."""
        entry = self.entry
        if entry.every is not None:
            count = math.floor((until - last) / entry.every)
            first = max(1, count - limit + 1)
            return [last + k * entry.every for k in range(first, count + 1)]
        assert entry.cron is not None
        return cron.fires_before(entry.cron, entry.timezone, until, last, limit,
                                 day_or=self.day_or)


def entries_of(conf: Mapping[str, Any]) -> dict[str, Periodic]:
    """Every entry of a Celery app's configuration: the settings' own (with zone and
    policy), then the other ``beat_schedule`` entries (Celery's format: a timedelta, a
    number of seconds or a crontab, in the app's time zone, policy ``skip``)."""
    ours: Mapping[str, BeatEntry] = conf.get(CONF_ENTRIES) or {}
    found: dict[str, Periodic] = {}
    for name, raw in (conf.get("beat_schedule") or {}).items():
        if name in ours:
            found[name] = _ours(name, ours[name])
            continue
        converted = _from_celery(name, raw, _zone_name(conf))
        if converted is not None:
            found[name] = converted
    for name, entry in ours.items():
        found.setdefault(name, _ours(name, entry))
    return found


def _ours(name: str, entry: BeatEntry) -> Periodic:
    options: dict[str, Any] = {}
    if entry.queue:
        options["queue"] = entry.queue
    if entry.priority is not None:
        options["priority"] = entry.priority
    return Periodic(name, entry, options)


def _zone_name(conf: Mapping[str, Any]) -> str:
    zone = conf.get("timezone")
    name = getattr(zone, "key", zone)
    return name if isinstance(name, str) and name else "UTC"


#: a crontab field's full range: shown as '*'
_FULL = {"minute": 60, "hour": 24, "day_of_month": 31, "month_of_year": 12, "day_of_week": 7}


def _from_celery(name: str, raw: Mapping[str, Any], zone: str) -> Periodic | None:
    from celery.schedules import crontab, schedule

    when = raw.get("schedule")
    base: dict[str, Any] = {"task": raw.get("task"), "args": list(raw.get("args") or ()),
                            "kwargs": dict(raw.get("kwargs") or {})}
    day_or = True
    if isinstance(when, crontab):
        fields = [",".join(map(str, sorted(values))) if len(values) < _FULL[part] else "*"
                  for part in _FULL for values in [getattr(when, part)]]
        minute, hour, dom, month, dow = fields
        base.update(cron=f"{minute} {hour} {dom} {month} {dow}", timezone=zone)
        day_or = "*" in (dom, dow)  # Celery requires both when both are restricted
    elif isinstance(when, schedule):
        base["every"] = when.run_every.total_seconds()
    elif isinstance(when, timedelta):
        base["every"] = when.total_seconds()
    elif isinstance(when, int | float) and not isinstance(when, bool):
        base["every"] = float(when)
    else:
        log.warning("beat entry not scheduled: taskworks beat runs intervals and crontabs",
                    entry=name, schedule=type(when).__name__)
        return None
    try:
        entry = BeatEntry(**base)
    except ValueError as exc:
        log.warning("beat entry not scheduled", entry=name, error=str(exc)[:300])
        return None
    return Periodic(name, entry, dict(raw.get("options") or {}), ours=False, day_or=day_or)
