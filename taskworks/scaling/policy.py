"""The autoscaling policy: a pure function from observations to desired worker processes.

``decide(observations, settings, previous)`` returns, per worker group, how many worker
processes it should have and why, and the state the next call needs. It reads no clock
and touches no process, so every rule is tested with a table (tests/scaling/).

Rules, per group, in this order:

1. stay within ``min_workers`` and ``max_workers``;
2. emergency: a queue deeper than 2x ``queue_threshold`` (the patterns guide's rule) scales up at
   once to what the backlog needs, without waiting for the scale-up cooldown;
3. scale up when the backlog per worker (waiting + reserved + running messages, so that
   prefetched messages never hide a backlog) exceeds ``target_backlog``, to
   ceil(backlog / target_backlog) workers, at most once per ``scale_up_cooldown``;
4. never scale up while CPU use is above ``cpu_ceiling``, memory use above
   ``memory_threshold``, or all groups together would pass ``max_total_workers``;
5. scale down one worker at a time, only after the backlog has stayed at or under the
   low-water mark (half the target of the smaller fleet) for ``scale_down_after``
   seconds. Between the low-water mark and the target nothing changes: that band, and
   the timers, are the hysteresis that keeps the fleet from flapping.

The patterns guide scaled the wrong way round (up only when the CPU was idle, down when busy);
here a busy machine only stops growth, it never removes a worker that is doing work.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from taskworks.settings import AutoscaleSettings, WorkerGroup

__all__ = ["Decision", "GroupDecision", "GroupObservation", "GroupState", "Observations", "decide",
           "total_ceiling"]


@dataclass(frozen=True)
class GroupObservation:
    #: per queue of the group: waiting + reserved (unacked) + running messages
    backlog_by_queue: Mapping[str, int]
    #: live worker processes of the group, draining ones excluded
    workers: int

    @property
    def backlog(self) -> int:
        return sum(self.backlog_by_queue.values())


@dataclass(frozen=True)
class Observations:
    #: seconds on any monotonic clock; only differences matter
    at: float
    cpu_percent: float
    memory_percent: float
    groups: Mapping[str, GroupObservation]


@dataclass(frozen=True)
class GroupState:
    desired: int
    last_up_at: float | None = None
    #: since when the backlog has been at or under the low-water mark
    low_since: float | None = None


@dataclass(frozen=True)
class GroupDecision:
    group: str
    previous: int
    desired: int
    backlog: int
    reason: str

    @property
    def changed(self) -> bool:
        return self.desired != self.previous


@dataclass(frozen=True)
class Decision:
    at: float
    groups: Mapping[str, GroupDecision]
    state: Mapping[str, GroupState] = field(default_factory=dict)

    @property
    def changes(self) -> list[GroupDecision]:
        return [d for d in self.groups.values() if d.changed]


def total_ceiling(settings: AutoscaleSettings) -> int:
    return settings.max_total_workers or 4 * (os.cpu_count() or 1)


def _growth_block(obs: Observations, settings: AutoscaleSettings) -> str | None:
    """Why the machine cannot take another worker now, or None."""
    if obs.cpu_percent > settings.cpu_ceiling:
        return f"CPU {obs.cpu_percent:.0f}% > ceiling {settings.cpu_ceiling:.0f}%"
    if obs.memory_percent > settings.memory_threshold:
        return f"memory {obs.memory_percent:.0f}% > threshold {settings.memory_threshold:.0f}%"
    return None


def decide(
    obs: Observations,
    groups: Mapping[str, WorkerGroup],
    settings: AutoscaleSettings,
    previous: Mapping[str, GroupState] | None = None,
) -> Decision:
    previous = previous or {}
    decisions: dict[str, GroupDecision] = {}
    states: dict[str, GroupState] = {}
    blocked = _growth_block(obs, settings)
    # room left under the all-groups ceiling, shared in the order groups are configured
    room = total_ceiling(settings) - sum(
        previous[name].desired if name in previous else config.min_workers
        for name, config in groups.items()
    )
    for name, config in groups.items():
        seen = obs.groups.get(name, GroupObservation({}, 0))
        state = previous.get(name) or GroupState(
            desired=min(max(seen.workers, config.min_workers), config.max_workers))
        state, reason = _decide_group(obs, seen, config, settings, state, blocked, room)
        room -= state.desired - (previous[name].desired if name in previous
                                 else config.min_workers)
        previous_desired = previous[name].desired if name in previous else seen.workers
        decisions[name] = GroupDecision(name, previous_desired, state.desired, seen.backlog,
                                        reason)
        states[name] = state
    return Decision(obs.at, decisions, states)


def _decide_group(
    obs: Observations, seen: GroupObservation, config: WorkerGroup,
    settings: AutoscaleSettings, state: GroupState, blocked: str | None, room: int,
) -> tuple[GroupState, str]:
    current, backlog = state.desired, seen.backlog
    if current < config.min_workers:
        return replace(state, desired=config.min_workers, low_since=None), \
            f"below min_workers {config.min_workers}"
    if current > config.max_workers:
        return replace(state, desired=config.max_workers, low_since=None), \
            f"above max_workers {config.max_workers}"
    needed = min(config.max_workers, math.ceil(backlog / config.target_backlog))
    deepest, depth = max(seen.backlog_by_queue.items(), key=lambda kv: kv[1],
                         default=("", 0))

    emergency = depth > 2 * config.queue_threshold
    if (emergency or backlog > current * config.target_backlog) and current < config.max_workers:
        why = (f"emergency: queue {deepest} holds {depth} > 2x threshold "
               f"{config.queue_threshold}") if emergency else (
            f"backlog {backlog} is {backlog / max(current, 1):.1f} per worker > target "
            f"{config.target_backlog}")
        if blocked:
            return replace(state, low_since=None), f"{why}; scale-up held: {blocked}"
        if room <= 0:
            return replace(state, low_since=None), \
                f"{why}; scale-up held: all groups at max_total_workers"
        cooling = (state.last_up_at is not None
                   and obs.at - state.last_up_at < settings.scale_up_cooldown)
        if cooling and not emergency:
            return replace(state, low_since=None), f"{why}; scale-up cooling down"
        target = min(max(needed, current + 1), current + room)
        return GroupState(desired=target, last_up_at=obs.at), f"{why}: {current} -> {target}"

    low_water = (current - 1) * config.target_backlog / 2
    if current > config.min_workers and backlog <= low_water:
        if state.low_since is None:
            return replace(state, low_since=obs.at), (
                f"backlog {backlog} <= low water {low_water:g}; "
                f"waiting {settings.scale_down_after:g}s")
        idle_for = obs.at - state.low_since
        if idle_for >= settings.scale_down_after:
            # the timer restarts: every further step down waits a whole period again
            return replace(state, desired=current - 1, low_since=obs.at), (
                f"backlog {backlog} <= low water {low_water:g} for {idle_for:.0f}s: "
                f"{current} -> {current - 1}")
        return state, f"backlog {backlog} <= low water {low_water:g} for {idle_for:.0f}s"
    return replace(state, low_since=None), f"steady: backlog {backlog} with {current} workers"
