"""Faults on the three-host topology: a host's link pulled mid-run, the broker and the
store restarted mid-run. In each, every task reaches a terminal outcome and nothing is
lost or done twice."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy import text

from tests.multihost.conftest import Cluster
from tests.multihost.netns import Worker
from tests.multihost.test_topology import (
    FAN_OUT,
    all_hosts,
    fan_out_workflow,
    journal_hosts,
    step_task_ids,
)
from tests.support.wait import wait_for

B, C = "b@hostB", "c@hostC"
#: one idempotent task's body: long enough that the cable is pulled mid-body
SECONDS = 0.8


def started(r: redis.Redis) -> list[tuple[str, str]]:
    """(label, host) of every body start, in order."""
    return [tuple(e.decode().split("|", 1)) for e in r.lrange("mh:started", 0, -1)]  # type: ignore[misc]


def effects(client: Any) -> dict[str, list[str]]:
    """key -> the host of each side effect of that key, from the store on host A."""
    out: dict[str, list[str]] = {}
    with client.store.session() as session:
        for key, host in session.execute(text("SELECT key, host FROM mh_effects")):
            out.setdefault(key, []).append(host)
    return out


def test_partitioned_host_work_is_redelivered_to_the_other_exactly_once(
    cluster: Cluster, client: Any, start_worker: Callable[..., Worker]
) -> None:
    start_worker("b")
    # one task at a time on C: when a new start shows, its previous task is over and
    # the one it runs has just begun, so the cable is pulled mid-body, not mid-commit
    worker_c = start_worker("c", concurrency=1)
    r = redis.Redis.from_url(client.settings.effective_broker_url)
    keys = [f"k{i:02d}" for i in range(16)]
    originals = {k: client.submit("mh.effect", [k, SECONDS]) for k in keys}

    def on_c() -> list[str] | None:
        labels = [label for label, host in started(r) if host == C]
        return labels if len(labels) >= 2 else None

    first_on_c = wait_for(on_c, what="C to run its second task")[0]
    # C's finished task has reached the journal (a cut-off C could not write it later)
    journal_hosts(client, [originals[first_on_c].id])
    host_c = cluster.net.hosts["c"]
    host_c.link(up=False)
    try:
        before = started(r)
        in_flight = [label for label, host in before if host == C][-1]
        # the same calls again: idempotency must answer them without a second effect
        duplicates = {k: client.submit("mh.effect", [k, SECONDS]) for k in keys}
        outcomes = {res.id: res.get(timeout=60) for res in
                    [*originals.values(), *duplicates.values()]}
    finally:
        worker_c.kill()  # still cut off: its interrupted body can never commit late
        host_c.link(up=True)

    # every task id has a terminal, successful outcome
    assert len(outcomes) == 2 * len(keys)
    assert set(outcomes.values()) <= {B, C}
    # each idempotent call had its side effect exactly once, whoever ran it
    done = effects(client)
    assert sorted(done) == keys
    assert {k: len(hosts) for k, hosts in done.items()} == dict.fromkeys(keys, 1)
    # C's interrupted task was redelivered to B after the visibility timeout: B ran it
    # again and made its effect; C's work before the cut stands as C's
    assert done[in_flight] == [B]
    assert (in_flight, B) in started(r)
    assert originals[in_flight].get() == B
    assert any(hosts == [C] for hosts in done.values())
    # the journal accounts for every task (a duplicate answered from the stored result
    # is journaled where it was answered), and for B's run of C's interrupted one
    hosts = journal_hosts(client, outcomes)
    assert sorted(hosts) == sorted(outcomes)
    assert B in hosts[originals[in_flight].id]


def test_workers_consume_again_after_a_valkey_restart(
    cluster: Cluster, client: Any, start_worker: Callable[..., Worker]
) -> None:
    start_worker("b")
    start_worker("c")
    r = redis.Redis.from_url(client.settings.effective_broker_url)
    before = [client.submit("mh.work", [f"before-{i}", 0.5]) for i in range(12)]
    wait_for(lambda: len(started(r)) >= 3, what="work to be under way")

    cluster.valkey.kill(signal.SIGKILL)  # mid-run, no shutdown: the AOF is all there is
    time.sleep(1.0)
    cluster.valkey.start()
    assert r.llen("mh:started") >= 3  # the AOF brought the data back

    # submitted after the restart, to each host's own queue: a worker that reconnected
    # but silently stopped consuming (a known Celery failure) would leave its share
    after = {host: [client.submit("mh.work", [f"after-{host}-{i}", 0.1], queue=f"host_{host}")
                    for i in range(4)] for host in ("b", "c")}

    assert {res.get(timeout=90) for res in after["b"]} == {B}
    assert {res.get(timeout=90) for res in after["c"]} == {C}
    # every task submitted before the restart completes too, as the journal (the system
    # of record) shows. Not the result backend: a task that finished while Valkey was
    # down could store neither its result nor its ack; Celery records it FAILURE
    # (ConnectionError outside the body), and when the visibility timeout hands it out
    # again the runtime sees its journaled success and does not run it twice.
    hosts = journal_hosts(client, [res.id for res in before], timeout=90)
    assert all_hosts(hosts) <= {B, C}
    labels = {label for label, _ in started(r)}
    assert {f"before-{i}" for i in range(12)} <= labels


def test_workflow_completes_across_a_postgres_restart(
    cluster: Cluster, client: Any, start_worker: Callable[..., Worker]
) -> None:
    start_worker("b")
    start_worker("c")
    r = redis.Redis.from_url(client.settings.effective_broker_url)
    client.workflows.register(fan_out_workflow("mh_pg", seconds=0.5))
    run = client.workflows.start("mh_pg", {"x": 1})
    wait_for(lambda: sum(label.startswith("mh_pg-b") for label, _ in started(r)) >= 3,
             what="branches to be running")

    # -m fast cuts every connection; down for 2 s, so that steps finish (and the
    # journal flushes) while the store refuses connections
    cluster.postgres.restart(downtime=2.0)

    status = run.wait(timeout=90)
    assert status.state.value == "SUCCEEDED", (status.error, status.failed_step)
    assert all(s.state == "SUCCEEDED" for s in status.steps.values())
    # the outage bit: some steps finished while the store was down and ran again
    assert any(s.tries > 1 for s in status.steps.values())
    results = status.results()
    assert len(results) == FAN_OUT + 2
    assert results["start"]["total"] == 2
    assert all(results[f"b{i:02d}"]["total"] == 3 for i in range(FAN_OUT))
    assert results["join"]["total"] == FAN_OUT * 3 + 1
    journal_hosts(client, step_task_ids(status))  # the journal caught up with every step
