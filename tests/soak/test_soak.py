"""The soak: 20,000 tasks, 10 % transient failures, workers SIGKILLed every few seconds.

Every task must end succeeded (journal) or dead-lettered, never both, none missing; the
journal must reconcile exactly with the dead-letter store; every idempotent side effect
must happen once per key. ``TASKWORKS_SOAK_TASKS`` shrinks the run for a quick local try.
See docs/soak.md.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from taskworks import keys
from taskworks.runtime import journal
from taskworks.runtime.dlq import DeadLetterFilter
from tests.soak.soak_tasks import (
    IDEMPOTENT,
    PLAIN,
    POLICY,
    effect_key,
    effect_pids_key,
    fails,
)
from tests.support.workers import WorkerProcess

TASKS = int(os.environ.get("TASKWORKS_SOAK_TASKS", "20000"))
#: one call in this many always fails: it must exhaust its retries and be dead-lettered
ALWAYS_FAIL_EVERY = 400
#: one idempotent call in this many repeats the previous call's arguments (same key)
SAME_KEY_EVERY = 20
#: a short visibility timeout brings a killed worker's messages back within seconds;
#: a short lease lets their redelivery run an idempotent call its dead holder had leased
WORKER_ENV = {"TASKWORKS_VISIBILITY_TIMEOUT": "5", "TASKWORKS_IDEMPOTENCY__LEASE_SECONDS": "2"}
#: (pool, concurrency) of the workers kept running; a killed one is replaced in kind
WORKER_SPECS = [("prefork", 2), ("threads", 4)]
#: seconds between kills of a prefork pool child, and of a whole worker (uniform)
CHILD_KILL_EVERY = (2.0, 4.0)
WORKER_KILL_EVERY = (5.0, 9.0)
#: a whole worker is killed only once it has lived this long, so the run progresses
MIN_WORKER_AGE = 6.0
FINISH_WITHIN = 480.0
#: the broker idle and no new outcome for this long: whatever is missing is lost
STALLED_AFTER = 20.0


@dataclass
class Chaos:
    """Kills a pool child or a whole worker every few seconds; replaces killed workers."""

    start: Callable[..., WorkerProcess]
    rng: random.Random = field(default_factory=lambda: random.Random(10))
    workers: list[tuple[WorkerProcess, str, int, float]] = field(default_factory=list)
    killed_pids: set[int] = field(default_factory=set)
    kills: Counter[str] = field(default_factory=Counter)

    def launch(self, pool: str, concurrency: int) -> None:
        worker = self.start(["default"], env=WORKER_ENV, pool=pool, concurrency=concurrency,
                            ready=False)
        self.workers.append((worker, pool, concurrency, time.monotonic()))

    def kill_child(self) -> None:
        children = [pid for worker, pool, _, _ in self.workers if pool == "prefork"
                    for pid in worker.children()]
        if children:
            pid = self.rng.choice(children)
            os.kill(pid, signal.SIGKILL)  # its parent requeues the task at once
            self.killed_pids.add(pid)
            self.kills["pool child"] += 1
        else:
            self.kills["pool child: none"] += 1

    def kill_a_worker(self) -> None:
        """SIGKILL a whole worker at whatever it is doing, and start another in its place.
        Its messages come back after the visibility timeout, even one it was taking from
        the queue: broker/transport.py takes and records a message in one step."""
        old = [e for e in self.workers if time.monotonic() - e[3] >= MIN_WORKER_AGE]
        if not old:
            return
        entry = self.rng.choice(old)
        worker, pool, concurrency, _ = entry
        self.killed_pids.update([worker.proc.pid, *worker.children()])
        worker.kill()
        self.kills[f"whole {pool} worker"] += 1
        self.workers.remove(entry)
        self.launch(pool, concurrency)


def _outcomes(tw: Any, ids: set[str]) -> tuple[dict[str, list[Any]], list[Any]]:
    rows: dict[str, list[Any]] = defaultdict(list)
    for name in (PLAIN, IDEMPOTENT):
        for row in journal.query(tw.store, journal.JournalQuery(task=name, limit=10**7)):
            rows[row.task_id].append(row)
    letters = [letter for name in (PLAIN, IDEMPOTENT)
               for letter in tw.dead_letters.find(DeadLetterFilter(task=name), limit=10**7)]
    assert set(rows) <= ids
    assert {letter.task_id for letter in letters} <= ids
    return rows, letters


def _done_rows(tw: Any) -> int:
    counts = Counter[str]()
    for name in (PLAIN, IDEMPOTENT):
        counts.update(journal.counts_by_state(tw.store, task=name))
    return counts["success"] + counts["failure"]


#: the lists of the default queue, one per priority step (kombu's Redis layout)
QUEUE_LISTS = ["default", *(f"default\x06\x16{step}" for step in range(1, 10))]


def _broker_idle(client: redis.Redis) -> bool:
    """No message waiting, reserved or held for a countdown."""
    pipe = client.pipeline(transaction=False)
    pipe.hlen("unacked")
    for name in QUEUE_LISTS:
        pipe.llen(name)
    return not any(pipe.execute())


def _expected(task_id: str, always_fail: bool) -> tuple[list[str], str | None]:
    """States a task untouched by any kill records, oldest first, and its dead-letter
    reason (None: it succeeds)."""
    states = []
    for retries in range(POLICY.max_retries + 1):
        if not fails(task_id, retries, always_fail):
            return [*states, "success"], None
        states.append("retry")
    return [*states[:-1], "failure"], "max_retries"


@pytest.mark.timeout(int(FINISH_WITHIN) + 120)
def test_soak_every_task_ends_once_and_side_effects_happen_once(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    began = time.monotonic()
    chaos = Chaos(start_worker)
    for pool, concurrency in WORKER_SPECS:
        chaos.launch(pool, concurrency)

    half = TASKS // 2
    plain_items = [[i, i % ALWAYS_FAIL_EVERY == 7] for i in range(half)]
    idem_keys = [f"k{i - 1 if i % SAME_KEY_EVERY == 1 else i}" for i in range(TASKS - half)]
    idem_items = [[key, int(key[1:]) % ALWAYS_FAIL_EVERY == 7] for key in idem_keys]
    always_fail: dict[str, bool] = {}
    key_of: dict[str, str] = {}
    for start in range(0, max(half, TASKS - half), 1000):  # interleaved, 1,000 at a time
        plain_chunk, idem_chunk = plain_items[start:start + 1000], idem_items[start:start + 1000]
        for task_id, (_, fail) in zip(tw.submit_many(PLAIN, plain_chunk), plain_chunk,
                                      strict=True):
            always_fail[task_id] = fail
        for task_id, (key, fail) in zip(tw.submit_many(IDEMPOTENT, idem_chunk), idem_chunk,
                                        strict=True):
            always_fail[task_id] = fail
            key_of[task_id] = key
    ids = set(always_fail)
    assert len(ids) == TASKS
    assert not _broker_idle(redis_client)  # the probe sees the backlog it waits out

    # -- chaos until every task has an outcome -------------------------------------
    deadline = time.monotonic() + FINISH_WITHIN
    next_child_kill = time.monotonic() + chaos.rng.uniform(*CHILD_KILL_EVERY)
    next_worker_kill = time.monotonic() + chaos.rng.uniform(*WORKER_KILL_EVERY)
    progress, idle_since = -1, time.monotonic()
    while (done := _done_rows(tw)) < TASKS:
        if time.monotonic() > deadline:
            break
        if done != progress or not _broker_idle(redis_client):
            progress, idle_since = done, time.monotonic()
        elif time.monotonic() - idle_since > STALLED_AFTER:
            break  # nothing left to run and nothing moves: what is missing is lost
        if time.monotonic() >= next_child_kill:
            chaos.kill_child()
            next_child_kill = time.monotonic() + chaos.rng.uniform(*CHILD_KILL_EVERY)
        if time.monotonic() >= next_worker_kill:
            chaos.kill_a_worker()
            next_worker_kill = time.monotonic() + chaos.rng.uniform(*WORKER_KILL_EVERY)
        time.sleep(0.3)
    chaos_ended = time.monotonic()
    # late duplicates (a message restored after its task had finished) run now, if any
    settle = time.monotonic() + 3 * float(WORKER_ENV["TASKWORKS_VISIBILITY_TIMEOUT"]) + 10
    while not _broker_idle(redis_client) and time.monotonic() < settle:
        time.sleep(0.5)
    for worker, *_ in chaos.workers:
        worker.stop()  # warm: the journal writes what it holds

    # -- every task ended once: succeeded or dead-lettered, never both --------------
    rows, letters = _outcomes(tw, ids)
    succeeded = {tid for tid, rs in rows.items() if any(r.state == "success" for r in rs)}
    dead = [letter.task_id for letter in letters]
    summary = (f"{TASKS} tasks in {chaos_ended - began:.0f}s "
               f"(+{time.monotonic() - chaos_ended:.0f}s settling); kills {dict(chaos.kills)}; "
               f"succeeded {len(succeeded)}, dead-lettered {len(dead)}")
    print(summary)
    missing = ids - succeeded - set(dead)
    assert not missing, f"{len(missing)} tasks have no outcome; {summary}; e.g. " + "; ".join(
        f"{tid}: backend {tw.app.AsyncResult(tid).state}, redelivered "
        f"{redis_client.get(keys.redeliveries(tid))}, rows "
        f"{[(r.state, r.attempt, r.pid) for r in rows.get(tid, [])]}"
        for tid in sorted(missing)[:8])
    assert not succeeded & set(dead), \
        f"succeeded AND dead-lettered: {sorted(succeeded & set(dead))[:5]}"
    assert len(dead) == len(set(dead)), \
        f"dead-lettered twice: {[t for t, n in Counter(dead).items() if n > 1][:5]}"
    assert len(succeeded) + len(dead) == TASKS

    # -- the journal reconciles exactly -------------------------------------------
    counts = Counter[str]()
    for name in (PLAIN, IDEMPOTENT):
        counts.update(journal.counts_by_state(tw.store, task=name))
    twice_ok = {tid: rs for tid, rs in rows.items()
                if sum(r.state == "success" for r in rs) > 1}
    assert counts["success"] == len(succeeded), \
        f"{counts['success'] - len(succeeded)} extra success rows: a task ran to success " \
        "twice: " + "; ".join(
            f"{tid} (redelivered {redis_client.get(keys.redeliveries(tid))}, key "
            f"{key_of.get(tid)}): " + ", ".join(
                f"{r.state}#{r.attempt} pid {r.pid}"
                f"{' KILLED' if r.pid in chaos.killed_pids else ''} {r.finished_at:%H:%M:%S.%f}"
                for r in rs)
            for tid, rs in list(twice_ok.items())[:5])
    failed_rows = [r for rs in rows.values() for r in rs if r.state == "failure"]
    assert sorted(r.task_id for r in failed_rows) == sorted(dead)
    attempts_of = {r.task_id: r.attempt for r in failed_rows}
    assert all(letter.attempts == attempts_of[letter.task_id] for letter in letters)
    reasons = Counter(letter.reason for letter in letters)
    assert set(reasons) <= {"max_retries", "redelivery_limit"}, (reasons, [
        (letter.task_id, letter.reason, letter.exc_type, (letter.exc_message or "")[:200],
         (letter.traceback or "")[-1500:])
        for letter in letters if letter.reason not in ("max_retries", "redelivery_limit")][:5])

    # touched by a kill: redelivered, or with a row written by a process later killed (its
    # sockets may have failed under it first: a retry the prediction cannot know of)
    touched = {tid for tid in ids if redis_client.exists(keys.redeliveries(tid))} | {
        tid for tid, rs in rows.items() if any(r.pid in chaos.killed_pids for r in rs)}
    shared_keys = {key for key, n in Counter(key_of.values()).items() if n > 1}
    by_letter = {letter.task_id: letter for letter in letters}
    retry_rows = 0
    for tid in ids:
        states = [r.state for r in sorted(rows.get(tid, []), key=lambda r: r.id)
                  if r.state != "deferred"]
        retry_rows += states.count("retry")
        if tid in touched or key_of.get(tid) in shared_keys:
            # a redelivery shifts the attempt count (and a worker killed between
            # publishing a retry and acknowledging leaves two copies that both record
            # attempts until one ends); a shared key answers from the stored result
            continue
        attempts = [r.attempt for r in rows.get(tid, []) if r.state != "deferred"]
        assert len(attempts) == len(set(attempts)), f"{tid}: one attempt recorded twice"
        want_states, want_reason = _expected(tid, always_fail[tid])
        assert states == want_states, f"{tid}: journal {states}, expected {want_states}: " + \
            ", ".join(f"{r.state}#{r.attempt} pid {r.pid}"
                      f"{' KILLED' if r.pid in chaos.killed_pids else ''} "
                      f"{r.finished_at:%H:%M:%S.%f} {r.exc_type}: {r.exc_message}"
                      for r in sorted(rows.get(tid, []), key=lambda r: r.id))
        assert (by_letter[tid].reason if tid in by_letter else None) == want_reason
    assert counts["retry"] == retry_rows
    assert reasons["max_retries"] >= sum(always_fail.values()) - len(touched)

    # -- idempotent side effects: once per key whose call succeeded ------------------
    succeeded_keys = {key_of[tid] for tid in succeeded if tid in key_of}
    effects = {key: [int(pid) for pid in redis_client.lrange(effect_pids_key(key), 0, -1)]
               for key in set(key_of.values())}
    assert all(int(redis_client.get(effect_key(key)) or 0) == len(pids)
               for key, pids in effects.items())
    assert not succeeded_keys - {key for key, pids in effects.items() if pids}
    # A process SIGKILLed between a call's side effect and the store of its result (the
    # idempotency middleware's after_success) leaves the call to run once more when its
    # lease lapses: the effect and the result are two writes (docs/soak.md). Any other
    # repeat (a duplicate running beside a live holder, a call run again after its
    # result was stored) is a defect.
    repeated = {key: pids for key, pids in effects.items() if len(pids) > 1}
    unexplained = {key: pids for key, pids in repeated.items()
                   if any(pid not in chaos.killed_pids for pid in pids[:-1])}
    assert not unexplained, f"side effects repeated by live processes: {unexplained}"
    # a key with no succeeded call has an effect only if that too was cut by a kill
    assert all(pids[-1] in chaos.killed_pids for key, pids in effects.items()
               if pids and key not in succeeded_keys)
    print(f"{summary}; touched by a redelivery {len(touched)}; retry rows {retry_rows}; "
          f"dead-letter reasons {dict(reasons)}; side effects repeated after a kill "
          f"{len(repeated)}")
