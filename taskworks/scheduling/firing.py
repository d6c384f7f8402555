"""The periodic scheduler: fires each due time of each entry once, durably.

Every tick reads each entry's last fire time from Redis (``keys.BEAT_LAST_FIRE``: entry
name -> the due time last fired or skipped, epoch seconds), computes the times due since,
applies the entry's missed-run policy (``plan``) and fires through the transport's fence
(broker/schedule.py): the message is pushed and the last fire time set in one Lua script,
only if that time is still the one read. So a beat killed between reading and publishing
loses nothing (the next leader reads the old time and fires), and two beats that both
believe they lead publish one due time once. Nothing is kept in memory between ticks.

A due time is *on time* for LATE_GRACE seconds: a leader change (lease plus a tick) or a
restart fires it late but fires it, whatever the policy. Older due times were *missed*:
``skip`` records the latest as handled without sending, ``run_once`` sends one fire for
them all, ``run_all`` sends each one within ``missed_window`` (the newest RUN_ALL_MAX).
An entry never fired before starts from now: nothing is caught up. A paused entry
(``keys.BEAT_PAUSED``) is not looked at (periodic.py: resuming skips what it missed).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script

from taskworks import keys
from taskworks.broker import schedule
from taskworks.logs import get_logger
from taskworks.scheduling.entries import RUN_ALL_MAX, Periodic

__all__ = ["LATE_GRACE", "PeriodicScheduler", "Plan", "advance", "format_time", "parse_time",
           "plan", "script", "text"]

log = get_logger("taskworks.beat")

#: seconds a due time stays on time: more than a leader change takes (a 15 s lease and
#: a 5 s tick), so a change of leader never turns a fire into a missed one
LATE_GRACE = 60.0
#: the shortest wait a tick returns (beat sleeps it), and the wait after a failure
MIN_WAIT = 0.01
RETRY_WAIT = 1.0


def script(name: str) -> Script:
    """A Lua script of this package; each call names its client."""
    source = (resources.files("taskworks.scheduling") / name).read_text()
    return Script(None, source.encode())  # type: ignore[arg-type]


_ADVANCE = script("advance.lua")


def format_time(moment: float) -> str:
    """Epoch seconds as stored: to the microsecond, no trailing zeros."""
    return f"{moment:.6f}".rstrip("0").rstrip(".")


def parse_time(raw: str) -> float | None:
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def text(value: Any) -> str:
    """A Redis reply as text (clients with or without ``decode_responses``)."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def advance(client: redis.Redis, name: str, last: str, new: str) -> bool:
    """Set ``name``'s last fire time to ``new`` if it is still ``last``; sends nothing."""
    return bool(_ADVANCE(keys=[keys.BEAT_LAST_FIRE], args=[name, last, new], client=client))


@dataclass(frozen=True)
class Plan:
    """What one tick does with an entry: move its last fire to ``skip_to`` without sending
    (None: no skip), then fire each of ``fires`` (due times, oldest first)."""

    skip_to: float | None
    fires: list[float]
    #: due times passed over (skipped, or folded into one catch-up fire)
    missed: int = 0


def plan(periodic: Periodic, last: float, now: float) -> Plan:
    """Apply ``periodic``'s missed-run policy to the due times in (last, now]."""
    entry = periodic.entry
    due = periodic.due_between(last, now, RUN_ALL_MAX)
    if not due:
        return Plan(None, [])
    latest = due[-1]
    if entry.missed == "run_all":
        window = max(entry.missed_window, LATE_GRACE)
        fires = [d for d in due if now - d <= window]
    elif entry.missed == "run_once" or now - latest <= LATE_GRACE:
        fires = [latest]  # on time, or the one catch-up fire
    else:
        fires = []
    missed = len(due) - (1 if fires and now - latest <= LATE_GRACE else 0)
    return Plan(None if fires else latest, fires, missed)


Send = Callable[[Periodic], None]


class PeriodicScheduler:
    """Fires ``entries`` through ``send`` (which publishes one message); ``tick`` does what
    is due at ``now`` and returns the seconds until the next due time (at most ``idle``)."""

    def __init__(self, client: redis.Redis, entries: Mapping[str, Periodic], send: Send, *,
                 idle: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.entries = dict(entries)
        self.send = send
        self.idle = idle
        self.clock = clock

    def tick(self, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        names = list(self.entries)
        if not names:
            return self.idle
        try:
            paused = {text(name) for name in self.client.smembers(keys.BEAT_PAUSED)}
            lasts = [text(raw) for raw in self.client.hmget(keys.BEAT_LAST_FIRE, names)]
        except redis.RedisError as exc:  # nothing can be fired without the broker anyway
            log.warning("beat cannot read its entries", error=str(exc)[:200])
            return self.idle
        wait = self.idle
        for name, last in zip(names, lasts, strict=True):
            if name in paused:
                continue
            try:
                next_due = self._run(self.entries[name], last, now)
            except Exception as exc:  # one entry's failure stops neither the others nor beat
                log.warning("beat entry not fired; retrying", entry=name,
                            error=f"{type(exc).__name__}: {exc}"[:300])
                next_due = now + RETRY_WAIT
            wait = min(wait, next_due - now)
        return max(MIN_WAIT, wait)

    def _run(self, periodic: Periodic, last: str, now: float) -> float:
        """Fire what is due for one entry; returns its next due time."""
        name = periodic.name
        since = parse_time(last)
        if since is None:  # never fired (or unreadable): the schedule starts now
            if advance(self.client, name, last, format_time(now)):
                log.info("beat entry scheduled", entry=name, schedule=periodic.schedule,
                         timezone=periodic.entry.timezone)
            return periodic.next_after(now)
        todo = plan(periodic, since, now)
        current = last
        if todo.skip_to is not None:
            new = format_time(todo.skip_to)
            if not advance(self.client, name, current, new):
                return now + MIN_WAIT  # another beat moved it on: read it again
            log.info("beat entry missed fires skipped", entry=name, missed=todo.missed,
                     policy=periodic.entry.missed, last=_iso(since))
            current = new
        elif todo.missed:
            log.info("beat entry missed fires", entry=name, missed=todo.missed,
                     policy=periodic.entry.missed, sending=len(todo.fires))
        for due in todo.fires:
            new = format_time(due)
            if not self._fire(periodic, current, new, due, now):
                return now + MIN_WAIT
            current = new
        after = parse_time(current)
        return periodic.next_after(now if after is None else after)

    def _fire(self, periodic: Periodic, last: str, new: str, due: float, now: float) -> bool:
        """Send one fire of ``due``, fenced on ``last``. True when this call fired it."""
        name = periodic.name
        with schedule.fenced(name, last, new) as fence:
            self.send(periodic)
        if fence.fired is None:
            # not published through taskworks' transport (another transport, or held
            # for a countdown): it went out unfenced; record it the same guarded way
            if advance(self.client, name, last, new):
                return True
            log.error("beat entry fired without the fence while another beat fired it: "
                      "this due time may have been sent twice", entry=name, due=_iso(due))
            return False
        if fence.fired:
            log.info("beat entry fired", entry=name, task=periodic.entry.task, due=_iso(due),
                     late=round(now - due, 3))
        else:
            log.info("beat entry fired already by another beat", entry=name, due=_iso(due))
        return fence.fired


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")
