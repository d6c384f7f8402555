"""The claim/dispatch logic against the store itself, on SQLite and PostgreSQL.

These drive RunStore the way workers do (start, finish, duplicate deliveries, cancel
racing completions) from many threads at once, without a broker: the exactly-once
decision lives in the SQL transactions, so this is where it is tested hardest.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskworks.store.engine import Store
from taskworks.store.migrate import upgrade
from taskworks.workflows import OnFailure, Step, StepState, Workflow
from taskworks.workflows.definitions import DefinitionStore
from taskworks.workflows.queries import RunQueries
from taskworks.workflows.recovery import RunRecovery
from taskworks.workflows.runs import Dispatch, RunStore


@pytest.fixture
def runs(database_url: str) -> Any:
    store = Store(database_url)
    upgrade(store)
    yield RunStore(store)
    store.dispose()


@pytest.fixture(scope="module")
def sqlite_runs(tmp_path_factory: pytest.TempPathFactory) -> Any:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('prop') / 'store.db'}")
    upgrade(store)
    yield RunStore(store)
    store.dispose()


def wf(*steps: Step, name: str = "w") -> Workflow:
    return Workflow(name, tuple(steps))


def s(name: str, *deps: str, **kw: Any) -> Step:
    return Step(name, "t", depends_on=tuple(deps), **kw)


def read(runs: RunStore) -> RunQueries:
    """The status reads, on the same store."""
    return RunQueries(runs.store)


def run_step(runs: RunStore, w: Workflow, d: Dispatch, state: StepState = StepState.SUCCEEDED,
             **kw: Any) -> list[Dispatch]:
    assert runs.start_step(d.run_id, d.name, d.token, redelivered=False, celery_id="x")
    return runs.finish_step(w, d.run_id, d.name, d.token, state, **kw).dispatch


def test_diamond_claims_the_join_once_and_duplicates_do_nothing(runs: RunStore) -> None:
    w = wf(s("a"), s("b", "a"), s("c", "a"), s("d", "b", "c"))
    run_id, roots = runs.create_run(w, {"x": 1})
    assert [d.name for d in roots] == ["a"]
    after_a = run_step(runs, w, roots[0], result=1)
    assert sorted(d.name for d in after_a) == ["b", "c"]
    # the same completion again (a redelivered message): nothing
    assert runs.finish_step(w, run_id, "a", roots[0].token, StepState.SUCCEEDED).dispatch == []
    # a stale message for a running step cannot start it again
    assert runs.start_step(run_id, "a", roots[0].token, redelivered=True, celery_id="y") is None
    b, c = sorted(after_a, key=lambda d: d.name)
    assert run_step(runs, w, b, result=2) == []
    joined = run_step(runs, w, c, result=3)
    assert [d.name for d in joined] == ["d"]
    out = runs.finish_step(w, run_id, "d", joined[0].token, StepState.SUCCEEDED)
    assert out.dispatch == []
    assert out.run_state is None
    run_step(runs, w, joined[0], result=4)
    assert read(runs).run_row(run_id).state == "SUCCEEDED"
    deps = runs.dependencies(run_id, ["b", "c"])
    assert {k: v[2] for k, v in deps.items()} == {"b": 2, "c": 3}


def test_concurrent_completions_dispatch_every_join_exactly_once(runs: RunStore) -> None:
    """200 branches finishing at once on 8 threads; join i waits for branches i and i+1."""
    n = 200
    w = wf(s("root"), *[s(f"b{i}", "root") for i in range(n)],
           *[s(f"j{i}", f"b{i}", f"b{i + 1}") for i in range(n - 1)])
    run_id, roots = runs.create_run(w, None)
    branches = run_step(runs, w, roots[0])
    assert len(branches) == n
    for d in branches:
        assert runs.start_step(run_id, d.name, d.token, redelivered=False, celery_id=None)
    random.shuffle(branches)
    barrier = threading.Barrier(8)

    def complete(chunk: list[Dispatch]) -> list[str]:
        barrier.wait()
        claimed: list[str] = []
        for d in chunk:
            for _ in range(2):  # every completion delivered twice
                claimed += [x.name for x in runs.finish_step(
                    w, run_id, d.name, d.token, StepState.SUCCEEDED).dispatch]
        return claimed

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(complete, [branches[i::8] for i in range(8)]))
    claimed = Counter(name for r in results for name in r)
    assert claimed == Counter({f"j{i}": 1 for i in range(n - 1)})
    assert read(runs).run_row(run_id).remaining == n - 1


def test_cancel_racing_completions_dispatches_nothing(runs: RunStore) -> None:
    w = wf(s("a"), *[s(f"m{i}", "a") for i in range(40)], s("z", *[f"m{i}" for i in range(40)]))
    run_id, roots = runs.create_run(w, None)
    middle = run_step(runs, w, roots[0])
    for d in middle:
        runs.start_step(run_id, d.name, d.token, redelivered=False, celery_id=None)

    def complete(d: Dispatch) -> list[Dispatch]:
        return runs.finish_step(w, run_id, d.name, d.token, StepState.SUCCEEDED).dispatch

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(complete, d) for d in middle]
        cancelled = runs.cancel(run_id)
        dispatched = [x for f in futures for x in f.result()]
    assert cancelled.applied
    row = read(runs).run_row(run_id)
    assert row.state == "CANCELLED"
    states = {r.name: r.state for r in read(runs).step_rows(run_id)}
    if dispatched:  # z was claimed before the cancel took the lock: then it was cancelled
        assert [d.name for d in dispatched] == ["z"]
        # and its message, when it comes, cannot start it
        assert runs.start_step(run_id, "z", dispatched[0].token, redelivered=False,
                               celery_id=None) is None
    assert states["z"] == "CANCELLED"
    assert runs.cancel(run_id).applied is False  # idempotent


def test_fail_fast_and_continue(runs: RunStore) -> None:
    w = wf(s("a"), s("bad", "a", on_failure=OnFailure.CONTINUE), s("ok", "a"),
           s("after_bad", "bad"), s("after_ok", "ok"), name="cont")
    run_id, roots = runs.create_run(w, None)
    bad, ok = sorted(run_step(runs, w, roots[0]), key=lambda d: d.name)
    assert run_step(runs, w, bad, StepState.FAILED, error="boom") == []
    after_ok = run_step(runs, w, ok)
    assert [d.name for d in after_ok] == ["after_ok"]
    run_step(runs, w, after_ok[0])
    row = read(runs).run_row(run_id)
    assert (row.state, row.failed_step, row.error) == ("FAILED", "bad", "boom")

    w2 = wf(s("a"), s("bad", "a"), s("ok", "a"), s("after_ok", "ok"), name="fast")
    run_id, roots = runs.create_run(w2, None)
    bad, ok = sorted(run_step(runs, w2, roots[0]), key=lambda d: d.name)
    runs.start_step(run_id, "ok", ok.token, redelivered=False, celery_id="ok-task-id")
    out = runs.finish_step(w2, run_id, "bad", bad.token, StepState.FAILED, error="boom")
    assert not out.applied  # bad was never started: the finish does not apply
    runs.start_step(run_id, "bad", bad.token, redelivered=False, celery_id=None)
    out = runs.finish_step(w2, run_id, "bad", bad.token, StepState.FAILED, error="boom")
    assert out.run_state == "FAILED"
    assert out.revoke == ["ok-task-id"]  # the running step's message is revoked
    assert runs.finish_step(w2, run_id, "ok", ok.token, StepState.SUCCEEDED).dispatch == []
    assert {r.name: r.state for r in read(runs).step_rows(run_id)} == {
        "a": "SUCCEEDED", "bad": "FAILED", "ok": "CANCELLED", "after_ok": "CANCELLED"}

    resumed = runs.resume(w2, run_id)
    assert sorted(d.name for d in resumed.dispatch) == ["bad", "ok"]
    attempts = {r.name: r.attempt for r in read(runs).step_rows(run_id)}
    assert attempts == {"a": 1, "bad": 2, "ok": 2, "after_ok": 2}
    # the old running body of ok finishes late: its token is stale, nothing happens
    assert runs.finish_step(w2, run_id, "ok", ok.token, StepState.SUCCEEDED).applied is False


def test_a_join_over_failures_runs_after_a_failed_or_skipped_dependency(
        runs: RunStore) -> None:
    """``run_if_failed``: the join is claimed once every dependency ended, whatever the
    outcome; a resume reruns the failed branch, the join and what follows the join."""
    cont = OnFailure.CONTINUE
    w = wf(s("a", on_failure=cont), s("b", on_failure=cont), s("after_a", "a"),
           s("join", "after_a", "b", run_if_failed=True), s("end", "join"), name="join")
    run_id, roots = runs.create_run(w, None)
    a, b = sorted(roots, key=lambda d: d.name)
    assert run_step(runs, w, a, StepState.FAILED, error="boom") == []  # after_a skipped
    joined = run_step(runs, w, b)
    assert [d.name for d in joined] == ["join"]
    end = run_step(runs, w, joined[0])
    assert [d.name for d in end] == ["end"]
    run_step(runs, w, end[0])
    assert read(runs).run_row(run_id).state == "FAILED"  # a step failed, though the join ran
    states = {r.name: (r.state, r.skip_reason) for r in read(runs).step_rows(run_id)}
    assert states["after_a"] == ("SKIPPED", "upstream_failed")
    assert states["join"] == ("SUCCEEDED", None)

    resumed = runs.resume(w, run_id)
    assert [d.name for d in resumed.dispatch] == ["a"]
    attempts = {r.name: r.attempt for r in read(runs).step_rows(run_id)}
    # b keeps its result; the join and what follows it run again over the full inputs
    assert attempts == {"a": 2, "b": 1, "after_a": 2, "join": 2, "end": 2}


def test_lost_publish_is_renewed_and_the_old_token_is_inert(runs: RunStore) -> None:
    w = wf(s("a"))
    run_id, roots = runs.create_run(w, None)  # never published, never marked dispatched
    recovery = RunRecovery(runs.store)
    stale = recovery.undispatched(older_than=-1)
    assert [(d.run_id, d.name) for d in stale] == [(run_id, "a")]
    fresh = recovery.renew(stale[0])
    assert fresh is not None
    assert fresh.token != roots[0].token
    assert recovery.renew(stale[0]) is None  # only one renewal wins
    assert runs.start_step(run_id, "a", roots[0].token, redelivered=False, celery_id=None) is None
    runs.mark_dispatched([fresh])
    assert recovery.undispatched(older_than=-1) == []
    assert runs.start_step(run_id, "a", fresh.token, redelivered=False, celery_id=None)


@st.composite
def dags(draw: st.DrawFn) -> list[tuple[str, tuple[str, ...]]]:
    n = draw(st.integers(1, 14))
    steps = []
    for i in range(n):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=4)) if i else set()
        steps.append((f"s{i}", tuple(f"s{d}" for d in sorted(deps))))
    return steps


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dag=dags(), seed=st.integers(0, 2**32 - 1))
def test_property_random_dags_run_each_step_once_after_its_dependencies(
        sqlite_runs: RunStore, dag: list[tuple[str, tuple[str, ...]]], seed: int) -> None:
    """Random DAGs, steps executed in a random order with duplicate and stale deliveries
    mixed in: every step is dispatched and run exactly once, after all its dependencies.
    (Store level, SQLite; test_engine covers the same with real workers.)"""
    rng = random.Random(seed)
    w = Workflow("p", tuple(Step(n, "t", depends_on=d) for n, d in dag))
    run_id, queue = sqlite_runs.create_run(w, None)
    delivered: list[Dispatch] = []
    ran: list[str] = []
    while queue:
        d = queue.pop(rng.randrange(len(queue)))
        if rng.random() < 0.3:
            queue.append(d)  # the broker delivers it again later
        started = sqlite_runs.start_step(run_id, d.name, d.token, redelivered=False,
                                         celery_id=None)
        if started is None:
            continue  # a duplicate: refused
        ran.append(d.name)
        done = set(ran[:-1])
        assert set(w.step(d.name).depends_on) <= done, (d.name, ran)
        delivered.append(d)
        queue += sqlite_runs.finish_step(w, run_id, d.name, d.token,
                                         StepState.SUCCEEDED).dispatch
        if rng.random() < 0.3:  # a completion delivered twice
            assert sqlite_runs.finish_step(w, run_id, d.name, d.token,
                                           StepState.SUCCEEDED).dispatch == []
    assert sorted(ran) == sorted(n for n, _ in dag)
    assert len(ran) == len(set(ran))
    assert read(sqlite_runs).run_row(run_id).state == "SUCCEEDED"


def test_the_parsed_definition_cache_is_bounded_and_misses_read_the_store(
        runs: RunStore) -> None:
    definitions = DefinitionStore(runs.store)
    definitions._definitions.max_entries = 3
    names = [f"bounded-{i}" for i in range(8)]
    for name in names:
        definitions.save(Workflow(name=name, steps=(Step("only", "wf.noop"),)))
    for _ in range(2):  # the second pass reads back what the bound dropped
        for name in names:
            assert definitions.definition(name, 1).name == name
            assert len(definitions._definitions) <= 3
