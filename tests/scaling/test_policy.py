"""The autoscaling policy, rule by rule: it is a pure function, so a table tests it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from taskworks.scaling.policy import (
    Decision,
    GroupObservation,
    GroupState,
    Observations,
    decide,
)
from taskworks.settings import AutoscaleSettings, WorkerGroup

GROUP = WorkerGroup(queues=["default", "io"], pool="solo", concurrency=1, min_workers=1,
                    max_workers=4, target_backlog=10, queue_threshold=100)
AUTO = AutoscaleSettings(scale_up_cooldown=5, scale_down_after=30, cpu_ceiling=90,
                         memory_threshold=85, max_total_workers=16)


def observe(at: float, backlog: int | Mapping[str, int], workers: int = 1, cpu: float = 10,
            memory: float = 30) -> Observations:
    queues = backlog if isinstance(backlog, Mapping) else {"default": backlog}
    return Observations(at, cpu, memory, {"g": GroupObservation(dict(queues), workers)})


def one(obs: Observations, state: GroupState | None = None, group: WorkerGroup = GROUP,
        auto: AutoscaleSettings = AUTO) -> Decision:
    return decide(obs, {"g": group}, auto, {"g": state} if state else None)


def desired(decision: Decision) -> int:
    return decision.groups["g"].desired


@pytest.mark.parametrize(("backlog", "current", "expected", "reason"), [
    (0, 1, 1, "steady"),
    (10, 1, 1, "steady"),                 # exactly the target: no change
    (11, 1, 2, "per worker > target"),    # ceil(11 / 10) = 2
    (35, 1, 4, "per worker > target"),    # straight to what the backlog needs
    (500, 2, 4, "emergency"),             # capped at max_workers
    (40, 4, 4, "steady"),                 # at max: nothing to do
])
def test_scale_up_to_what_the_backlog_needs(backlog: int, current: int, expected: int,
                                            reason: str) -> None:
    decision = one(observe(100, backlog, current), GroupState(current))
    assert desired(decision) == expected
    assert reason in decision.groups["g"].reason


def test_backlog_counts_every_queue_of_the_group() -> None:
    decision = one(observe(0, {"default": 8, "io": 8}), GroupState(1))
    assert desired(decision) == 2


def test_min_and_max_are_enforced_first() -> None:
    assert desired(one(observe(0, 0, 0), GroupState(0))) == 1
    assert "below min_workers" in one(observe(0, 0, 0), GroupState(0)).groups["g"].reason
    assert desired(one(observe(0, 0, 9), GroupState(9))) == 4


def test_first_decision_starts_from_the_live_workers_within_bounds() -> None:
    assert desired(one(observe(0, 0, 0))) == 1
    assert desired(one(observe(0, 0, 3))) == 3
    assert desired(one(observe(0, 0, 7))) == 4


def test_scale_up_waits_for_its_cooldown() -> None:
    first = one(observe(100, 25, 1), GroupState(1))
    assert desired(first) == 3
    state = first.state["g"]
    held = one(observe(103, 100, 3), state)
    assert desired(held) == 3
    assert "cooling down" in held.groups["g"].reason
    assert desired(one(observe(105, 100, 3), state)) == 4


def test_emergency_ignores_the_cooldown() -> None:
    state = GroupState(2, last_up_at=100)
    decision = one(observe(101, {"io": 201}, 2), state)
    assert desired(decision) == 4
    assert "emergency: queue io holds 201 > 2x threshold 100" in decision.groups["g"].reason


@pytest.mark.parametrize(("cpu", "memory", "held_by"), [
    (95, 30, "CPU 95% > ceiling 90%"),
    (10, 90, "memory 90% > threshold 85%"),
])
def test_no_scale_up_past_the_ceilings_even_in_an_emergency(cpu: float, memory: float,
                                                            held_by: str) -> None:
    for backlog in (50, 500):
        decision = one(observe(100, backlog, 1, cpu=cpu, memory=memory), GroupState(1))
        assert desired(decision) == 1
        assert held_by in decision.groups["g"].reason


def test_a_busy_machine_never_removes_a_worker() -> None:
    # the patterns guide's inverted rule removed workers when the CPU was busy
    decision = one(observe(100, 30, 3, cpu=99, memory=99), GroupState(3))
    assert desired(decision) == 3


def test_all_groups_share_max_total_workers() -> None:
    groups = {"a": GROUP, "b": GROUP}
    obs = Observations(0, 10, 30, {"a": GroupObservation({"default": 100}, 1),
                                   "b": GroupObservation({"default": 100}, 1)})
    auto = AutoscaleSettings(max_total_workers=5)
    decision = decide(obs, groups, auto, {"a": GroupState(1), "b": GroupState(1)})
    assert (decision.groups["a"].desired, decision.groups["b"].desired) == (4, 1)
    assert "max_total_workers" in decision.groups["b"].reason


def test_scale_down_one_at_a_time_after_the_idle_period() -> None:
    state = GroupState(4)
    at, seen = 0.0, []
    while at <= 120:
        decision = one(observe(at, 0, state.desired), state)
        state = decision.state["g"]
        seen.append((at, state.desired))
        at += 5
    changes = [(t, n) for (t, n), (_, before) in zip(seen[1:], seen, strict=False)
               if n != before]
    assert changes == [(30.0, 3), (60.0, 2), (90.0, 1)]


def test_backlog_back_over_low_water_restarts_the_idle_timer() -> None:
    state = one(observe(0, 0, 3), GroupState(3)).state["g"]
    assert state.low_since == 0
    state = one(observe(20, 15, 3), state).state["g"]  # low water for 3 workers is 10
    assert state.low_since is None
    decision = one(observe(35, 0, 3), state)
    assert desired(decision) == 3  # the 30 s start again at 35


def test_hysteresis_band_never_flaps() -> None:
    """A backlog oscillating inside the band between low water and target changes nothing."""
    state = GroupState(3)
    for i in range(100):
        backlog = 11 if i % 2 else 29   # low water 10, target 30 for 3 workers
        state = one(observe(i * 2.0, backlog, 3), state).state["g"]
        assert state.desired == 3


def test_decisions_name_what_changed() -> None:
    decision = one(observe(0, 25, 1), GroupState(1))
    [change] = decision.changes
    assert (change.group, change.previous, change.desired, change.backlog) == ("g", 1, 3, 25)
    assert "1 -> 3" in change.reason


def test_desired_replicas_for_a_cluster_autoscaler(tw: Any, redis_client: Any) -> None:
    from taskworks import load_settings
    from taskworks.scaling.replicas import desired_replicas

    groups = {"web": {"queues": ["default"], "min_workers": 1, "max_workers": 5,
                      "target_backlog": 10, "queue_threshold": 100},
              "batch": {"queues": ["io_intensive"], "min_workers": 0, "max_workers": 3,
                        "target_backlog": 10, "queue_threshold": 10}}
    settings = load_settings(worker_groups=groups)
    assert {n: g["desired"] for n, g in desired_replicas(settings, redis_client).items()} \
        == {"web": 1, "batch": 0}
    for i in range(25):
        tw.submit("tests.echo", [i], queue="default")
        tw.submit("tests.echo", [i], queue="io_intensive")
    replicas = desired_replicas(settings, redis_client)
    assert (replicas["web"]["desired"], replicas["web"]["backlog"]) == (3, 25)
    assert (replicas["batch"]["desired"], replicas["batch"]["emergency"]) == (3, True)
