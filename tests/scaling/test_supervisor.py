"""The supervisor with real worker processes: scale up on a burst, drain without losing or
killing a task, restart a crashed worker, record every decision."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import delete

from taskworks import load_settings
from taskworks.runtime import journal
from taskworks.scaling.record import DecisionRecorder, current_status, recent_decisions
from taskworks.scaling.supervisor import Supervisor
from taskworks.store.tables import JournalEntry, ScalingDecision
from tests.support.wait import wait_for
from tests.support.workers import ROOT

MakeSupervisor = Callable[..., Supervisor]


@pytest.fixture
def make_supervisor(tw: Any, tmp_path: Path, redis_client: redis.Redis
                    ) -> Iterator[MakeSupervisor]:
    with tw.store.session() as session:
        session.execute(delete(JournalEntry))
        session.execute(delete(ScalingDecision))
    made: list[tuple[Supervisor, threading.Event, threading.Thread | None]] = []

    def make(group: dict[str, Any], *, run: bool = True, env: dict[str, str] | None = None,
             **autoscale: Any) -> Supervisor:
        groups = {"burst": {"queues": ["default"], "pool": "solo", "concurrency": 1, **group}}
        settings = load_settings(worker_groups=groups, autoscale={"interval": 0.3, **autoscale})
        recorder = DecisionRecorder(tw.store, redis.Redis.from_url(settings.effective_broker_url),
                                    status_ttl=10)
        supervisor = Supervisor(
            settings, app_spec="tests.apps.sample:tw", log_dir=tmp_path,
            on_change=recorder.record, on_status=recorder.publish,
            env={"TASKWORKS_WORKER_GROUPS": json.dumps(groups), **(env or {})},
        )
        stop = threading.Event()
        thread = threading.Thread(target=supervisor.run, args=(stop,), daemon=True) if run \
            else None
        if thread is not None:
            thread.start()
        made.append((supervisor, stop, thread))
        return supervisor

    yield make
    for supervisor, stop, thread in made:
        stop.set()
        if thread is not None:
            thread.join(10)
        supervisor.stop(30)


def _live(supervisor: Supervisor) -> int:
    return len(supervisor.live("burst"))


def _ready(tw: Any, supervisor: Supervisor, count: int) -> None:
    """Wait until ``count`` supervised workers answer a ping."""
    def answering() -> bool:
        names = [s.hostname.replace("%h", os.uname().nodename) for s in supervisor.live()]
        replies = tw.app.control.ping(destination=names, timeout=0.5) or []
        return len(names) == count and len(replies) == count

    wait_for(answering, timeout=60, interval=0.2, what=f"{count} workers answering")


def test_a_burst_scales_up_then_back_down_and_every_task_is_journaled_once(
    tw: Any, make_supervisor: MakeSupervisor,
) -> None:
    supervisor = make_supervisor({"min_workers": 1, "max_workers": 3, "target_backlog": 200,
                                  "queue_threshold": 100_000},
                                 scale_up_cooldown=0.5, scale_down_after=1.0,
                                 # the test loads both cores itself: don't let that hold it
                                 cpu_ceiling=100, memory_threshold=100)
    _ready(tw, supervisor, 1)
    # the whole burst at once (pipelined), as a burst arrives in production
    tw.submit_many("tests.echo", [[i] for i in range(5000)], batch_size=5000)
    wait_for(lambda: _live(supervisor) == 3, timeout=60, what="scale-up to 3 workers")
    counts = wait_for(
        lambda: (c := journal.counts_by_state(tw.store, "tests.echo")).get("success") == 5000
        and c, timeout=240, interval=0.5, what="5,000 journaled successes")
    assert counts == {"success": 5000}
    wait_for(lambda: _live(supervisor) == 1, timeout=60, what="scale-down to 1 worker")
    assert supervisor.dead == 0
    history = recent_decisions(tw.store, 50, group="burst")
    ups = [d for d in history if d["desired"] > d["previous"]]
    downs = [d for d in history if d["desired"] < d["previous"]]
    assert ups
    assert "per worker > target 200" in ups[-1]["reason"]
    assert ups[-1]["observations"]["burst"]["backlog"]["default"] > 200
    assert [(d["previous"], d["desired"]) for d in reversed(downs)] == [(3, 2), (2, 1)]


def test_scale_down_drains_workers_without_killing_or_losing_a_task(
    tw: Any, redis_client: redis.Redis, make_supervisor: MakeSupervisor,
) -> None:
    supervisor = make_supervisor({"min_workers": 3, "max_workers": 3}, run=False)
    supervisor.start()
    _ready(tw, supervisor, 3)
    results = [tw.submit("tests.slow_mark", ["drain", 1.5]) for _ in range(6)]
    wait_for(lambda: int(redis_client.get("drain:runs") or 0) >= 3, what="3 tasks running")
    draining = sorted(supervisor.live("burst"), key=lambda s: s.started_at)[1:]
    supervisor.state["burst"] = supervisor.state["burst"].__class__(desired=1)
    supervisor.reconcile()
    assert all(slot.draining for slot in draining)
    for slot in draining:
        assert slot.proc.wait(30) == 0  # warm shutdown: finished its task, then exited
    assert sorted(r.get(timeout=60) for r in results) == [1, 2, 3, 4, 5, 6]
    assert redis_client.get("drain:done") == "6"  # every run finished: nothing was killed
    supervisor.reap()
    assert supervisor.dead == 0
    assert _live(supervisor) == 1


def test_a_crashed_worker_is_restarted(tw: Any, make_supervisor: MakeSupervisor) -> None:
    supervisor = make_supervisor({"min_workers": 1, "max_workers": 1}, restart_backoff=0.2)
    _ready(tw, supervisor, 1)
    [slot] = supervisor.live("burst")
    os.killpg(slot.proc.pid, signal.SIGKILL)
    wait_for(lambda: supervisor.dead == 1 and _live(supervisor) == 1
             and supervisor.live("burst")[0] is not slot, timeout=30, what="a restart")
    assert supervisor.health["burst"].restarts == 1
    _ready(tw, supervisor, 1)
    assert tw.submit("tests.echo", [7]).get(timeout=30) == 7


def test_a_solo_worker_that_recycles_itself_is_replaced_at_once_not_counted_as_a_crash(
    tw: Any, redis_client: redis.Redis, make_supervisor: MakeSupervisor
) -> None:
    supervisor = make_supervisor({"min_workers": 1, "max_workers": 1},
                                 env={"TASKWORKS_WORKER__SOLO_MAX_TASKS": "2"})
    _ready(tw, supervisor, 1)
    results = [tw.submit("tests.record", [f"s{i}"]) for i in range(5)]
    assert sorted(r.get(timeout=40)["label"] for r in results) == [f"s{i}" for i in range(5)]
    ran_in = [entry.split("|")[2] for entry in redis_client.lrange("tests:order", 0, -1)]
    assert len(ran_in) == 5
    assert len(set(ran_in)) == 3  # 2 tasks per process: recycled twice, replaced each time
    assert supervisor.dead == 0
    assert supervisor.health["burst"].restarts == 0


def test_status_is_published_and_the_cli_shows_it(
    tw: Any, redis_client: redis.Redis, make_supervisor: MakeSupervisor,
) -> None:
    supervisor = make_supervisor({"min_workers": 1, "max_workers": 2})
    _ready(tw, supervisor, 1)
    status = wait_for(lambda: current_status(redis_client), what="a published status")
    assert status["groups"]["burst"]["active"] == 1
    assert status["total"] == 1
    shown = subprocess.run(
        [sys.executable, "-m", "taskworks", "autoscale", "status", "--json", "--app",
         "tests.apps.sample:tw"], cwd=ROOT, env=os.environ, capture_output=True, text=True,
        timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"]["groups"]["burst"]["desired"] == 1
