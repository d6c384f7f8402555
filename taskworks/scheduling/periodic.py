"""Periodic entries for operators: list them with their state, pause and resume one.

The entries are the Celery app's (``entries_of(app.conf)``): the settings' ``beat_schedule``
and those taskworks or an adopted app add. A paused entry (``keys.BEAT_PAUSED``) is not
fired. Resuming skips what fell due while it was paused: its last fire time moves to its
latest due time (in the same script that unpauses it), and it fires next at its next due
time; pausing is meant to stop runs, not to defer them. A fire a beat was already
publishing when the pause arrived still goes out.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import redis

from taskworks import keys
from taskworks.errors import InvalidInput
from taskworks.scheduling.entries import Periodic, entries_of
from taskworks.scheduling.firing import format_time, parse_time, plan, script, text

__all__ = ["EntryStatus", "list_entries", "pause", "resume", "status"]

_RESUME = script("resume.lua")


@dataclass(frozen=True)
class EntryStatus:
    """One entry as operators see it; times are epoch seconds (None: not known yet)."""

    name: str
    task: str
    #: "every 300s" or "cron 0 2 * * *"
    schedule: str
    timezone: str
    missed: str
    missed_window: float
    paused: bool
    #: the due time last fired (or skipped); None before beat first saw the entry
    last_fire: float | None
    #: when it fires next: None while paused; in the past when beat is behind or down
    next_fire: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _next_fire(periodic: Periodic, last: float | None, now: float) -> float:
    if last is None:  # beat starts its schedule at its first look: from about now
        return periodic.next_after(now)
    todo = plan(periodic, last, now)
    if todo.fires:
        return todo.fires[0]  # due: beat sends it at its next tick
    return periodic.next_after(todo.skip_to if todo.skip_to is not None else last)


def _status(periodic: Periodic, paused: bool, raw_last: str, now: float) -> EntryStatus:
    entry = periodic.entry
    last = parse_time(raw_last)
    return EntryStatus(
        name=periodic.name, task=entry.task, schedule=periodic.schedule,
        timezone=entry.timezone, missed=entry.missed, missed_window=entry.missed_window,
        paused=paused, last_fire=last,
        next_fire=None if paused else _next_fire(periodic, last, now))


def list_entries(conf: Mapping[str, Any], client: redis.Redis,
                 now: float | None = None) -> list[EntryStatus]:
    """Every entry of the app whose configuration is ``conf``, in its order."""
    now = time.time() if now is None else now
    entries = entries_of(conf)
    if not entries:
        return []
    names = list(entries)
    paused = {text(name) for name in client.smembers(keys.BEAT_PAUSED)}
    lasts = [text(raw) for raw in client.hmget(keys.BEAT_LAST_FIRE, names)]
    return [_status(entries[name], name in paused, last, now)
            for name, last in zip(names, lasts, strict=True)]


def _entry(conf: Mapping[str, Any], name: str) -> Periodic:
    entries = entries_of(conf)
    found = entries.get(name)
    if found is None:
        known = ", ".join(entries) or "none configured"
        raise InvalidInput("name", name, f"the name of a periodic entry ({known})")
    return found


def status(conf: Mapping[str, Any], client: redis.Redis, name: str,
           now: float | None = None) -> EntryStatus:
    """One entry; InvalidInput naming ``name`` when there is no such entry."""
    periodic = _entry(conf, name)
    now = time.time() if now is None else now
    paused = bool(client.sismember(keys.BEAT_PAUSED, name))
    return _status(periodic, paused, text(client.hget(keys.BEAT_LAST_FIRE, name)), now)


def pause(conf: Mapping[str, Any], client: redis.Redis, name: str,
          now: float | None = None) -> EntryStatus:
    """Stop firing ``name`` until it is resumed (pausing a paused entry changes nothing)."""
    _entry(conf, name)
    client.sadd(keys.BEAT_PAUSED, name)
    return status(conf, client, name, now)


def resume(conf: Mapping[str, Any], client: redis.Redis, name: str,
           now: float | None = None) -> EntryStatus:
    """Fire ``name`` again from its next due time: what fell due while it was paused is
    skipped. Resuming an entry that is not paused changes nothing."""
    periodic = _entry(conf, name)
    now = time.time() if now is None else now
    last = parse_time(text(client.hget(keys.BEAT_LAST_FIRE, name)))
    due = [] if last is None else periodic.due_between(last, now, 1)
    _RESUME(keys=[keys.BEAT_PAUSED, keys.BEAT_LAST_FIRE],
            args=[name, format_time(due[-1]) if due else ""], client=client)
    return status(conf, client, name, now)
