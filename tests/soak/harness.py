"""What the soaks share: the submitted calls, the chaos that kills workers, and the checks.

``verify`` is the soaks' verdict: every task ended exactly once (a ``success`` row or a
dead letter, never both, none missing, none dead-lettered twice), the journal reconciles
with the dead-letter store, tasks nothing disturbed recorded exactly the states their
deterministic failures predict, and idempotent side effects happened once per key except
when a SIGKILL explains the repeat. See docs/soak.md.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from taskworks import keys
from taskworks.runtime import journal
from taskworks.runtime.dlq import DeadLetterFilter, DeadLetterStore
from taskworks.store.engine import Store
from taskworks.store.tables import DeadLetter, JournalEntry
from tests.soak.soak_tasks import (
    IDEMPOTENT,
    PLAIN,
    POLICY,
    effect_key,
    effect_pids_key,
    fails,
)
from tests.support.workers import WorkerProcess

#: one call in this many always fails: it must exhaust its retries and be dead-lettered
ALWAYS_FAIL_EVERY = 400
#: one idempotent call in this many repeats the previous call's arguments (same key)
SAME_KEY_EVERY = 20
#: a short visibility timeout brings a killed worker's messages back within seconds;
#: a short lease lets their redelivery run an idempotent call its dead holder had leased
WORKER_ENV = {"TASKWORKS_VISIBILITY_TIMEOUT": "5", "TASKWORKS_IDEMPOTENCY__LEASE_SECONDS": "2"}
#: (pool, concurrency) of the workers kept running; a killed one is replaced in kind (solo:
#: the default topology's processes, whose journal rows share commits)
WORKER_SPECS = [("prefork", 2), ("threads", 4), ("solo", 1)]
#: seconds between kills of a prefork pool child, and of a whole worker (uniform)
CHILD_KILL_EVERY = (2.0, 4.0)
WORKER_KILL_EVERY = (5.0, 9.0)
#: a whole worker is killed only once it has lived this long, so the run progresses
MIN_WORKER_AGE = 6.0
#: the broker idle and no new outcome for this long: whatever is missing is lost
STALLED_AFTER = 20.0
#: the lists of the default queue, one per priority step (kombu's Redis layout)
QUEUE_LISTS = ["default", *(f"default\x06\x16{step}" for step in range(1, 10))]


@dataclass
class Chaos:
    """Kills a pool child or a whole worker every few seconds; replaces killed workers."""

    start: Callable[..., WorkerProcess]
    env: dict[str, str] = field(default_factory=lambda: dict(WORKER_ENV))
    rng: random.Random = field(default_factory=lambda: random.Random(10))
    workers: list[tuple[WorkerProcess, str, int, float]] = field(default_factory=list)
    #: every worker started, the killed ones included (their logs)
    started: list[WorkerProcess] = field(default_factory=list)
    killed_pids: set[int] = field(default_factory=set)
    #: pid -> when it was killed (time.time())
    killed_at: dict[int, float] = field(default_factory=dict)
    kills: Counter[str] = field(default_factory=Counter)
    next_child_kill: float = 0.0
    next_worker_kill: float = 0.0
    #: hostnames of workers that said they are ready
    ready: set[str] = field(default_factory=set)

    def launch(self, pool: str, concurrency: int) -> None:
        worker = self.start(["default"], env=self.env, pool=pool, concurrency=concurrency,
                            ready=False)
        self.workers.append((worker, pool, concurrency, time.monotonic()))
        self.started.append(worker)

    def launch_all(self) -> None:
        for pool, concurrency in WORKER_SPECS:
            self.launch(pool, concurrency)

    def arm(self) -> None:
        """The first kills are due a few seconds from now."""
        self.next_child_kill = time.monotonic() + self.rng.uniform(*CHILD_KILL_EVERY)
        self.next_worker_kill = time.monotonic() + self.rng.uniform(*WORKER_KILL_EVERY)

    def tick(self) -> None:
        """Kill whatever is due."""
        if time.monotonic() >= self.next_child_kill:
            self.kill_child()
            self.next_child_kill = time.monotonic() + self.rng.uniform(*CHILD_KILL_EVERY)
        if time.monotonic() >= self.next_worker_kill:
            self.kill_a_worker()
            self.next_worker_kill = time.monotonic() + self.rng.uniform(*WORKER_KILL_EVERY)

    def is_ready(self, worker: WorkerProcess) -> bool:
        """The worker consumes: Celery ends a worker whose pool child died before that
        ("Could not start worker processes"), which a broker outage can make seconds."""
        if worker.hostname not in self.ready and \
                f"{worker.hostname} ready." in worker.log_path.read_text(errors="replace"):
            self.ready.add(worker.hostname)
        return worker.hostname in self.ready

    def kill_child(self) -> None:
        children = [pid for worker, pool, _, _ in self.workers
                    if pool == "prefork" and self.is_ready(worker)
                    for pid in worker.children()]
        if children:
            pid = self.rng.choice(children)
            os.kill(pid, signal.SIGKILL)  # its parent requeues the task at once
            self.killed_pids.add(pid)
            self.killed_at[pid] = time.time()
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
        pids = [worker.proc.pid, *worker.children()]
        worker.kill()
        self.killed_pids.update(pids)
        self.killed_at.update(dict.fromkeys(pids, time.time()))
        self.kills[f"whole {pool} worker"] += 1
        self.workers.remove(entry)
        self.launch(pool, concurrency)

    def exited(self) -> list[WorkerProcess]:
        """Workers that ended on their own (nobody killed them): taken out of the running
        set, and replaced."""
        gone = [e for e in self.workers if e[0].proc.poll() is not None]
        for entry in gone:
            self.workers.remove(entry)
            self.launch(entry[1], entry[2])
        return [entry[0] for entry in gone]


@dataclass(frozen=True)
class Submitted:
    """The calls of one soak: whether each task id always fails, and each idempotent
    call's key."""

    always_fail: dict[str, bool]
    key_of: dict[str, str]

    @property
    def ids(self) -> set[str]:
        return set(self.always_fail)


def submit(tw: Any, tasks: int, always_fail_every: int = ALWAYS_FAIL_EVERY,
           chunk: int = 1000) -> Submitted:
    """``tasks`` calls, half plain, half idempotent, interleaved ``chunk`` at a time; one
    in ``always_fail_every`` always fails."""
    half = tasks // 2
    plain_items: list[list[Any]] = [[i, i % always_fail_every == 7] for i in range(half)]
    idem_keys = [f"k{i - 1 if i % SAME_KEY_EVERY == 1 else i}" for i in range(tasks - half)]
    idem_items: list[list[Any]] = [[key, int(key[1:]) % always_fail_every == 7]
                                   for key in idem_keys]
    always_fail: dict[str, bool] = {}
    key_of: dict[str, str] = {}
    for start in range(0, max(half, tasks - half), chunk):
        plain_chunk, idem_chunk = plain_items[start:start + chunk], idem_items[start:start + chunk]
        for task_id, (_, fail) in zip(tw.submit_many(PLAIN, plain_chunk), plain_chunk,
                                      strict=True):
            always_fail[task_id] = fail
        for task_id, (key, fail) in zip(tw.submit_many(IDEMPOTENT, idem_chunk), idem_chunk,
                                        strict=True):
            always_fail[task_id] = fail
            key_of[task_id] = key
    assert len(always_fail) == tasks
    return Submitted(always_fail, key_of)


def broker_idle(client: redis.Redis) -> bool:
    """No message waiting, reserved or held for a countdown."""
    pipe = client.pipeline(transaction=False)
    pipe.hlen("unacked")
    for name in QUEUE_LISTS:
        pipe.llen(name)
    return not any(pipe.execute())


def done_rows(store: Store) -> int:
    counts = Counter[str]()
    for name in (PLAIN, IDEMPOTENT):
        counts.update(journal.counts_by_state(store, task=name))
    return counts["success"] + counts["failure"]


def expected(task_id: str, always_fail: bool) -> tuple[list[str], str | None]:
    """States a task untouched by any kill records, oldest first, and its dead-letter
    reason (None: it succeeds)."""
    states: list[str] = []
    for retries in range(POLICY.max_retries + 1):
        if not fails(task_id, retries, always_fail):
            return [*states, "success"], None
        states.append("retry")
    return [*states[:-1], "failure"], "max_retries"


def outcomes(store: Store, letters: DeadLetterStore, ids: set[str]
             ) -> tuple[dict[str, list[JournalEntry]], list[DeadLetter]]:
    rows: dict[str, list[JournalEntry]] = defaultdict(list)
    for name in (PLAIN, IDEMPOTENT):
        for row in journal.query(store, journal.JournalQuery(task=name, limit=10**7)):
            rows[row.task_id].append(row)
    found = [letter for name in (PLAIN, IDEMPOTENT)
             for letter in letters.find(DeadLetterFilter(task=name), limit=10**7)]
    assert set(rows) <= ids
    assert {letter.task_id for letter in found} <= ids
    return rows, found


_REQUEUED = re.compile(r"outcome not recorded: message requeued.*?"
                       r"error='?(?P<where>[^:']+):.*?task_id=(?P<task_id>[0-9a-f-]{36})")


def requeues(logs: Iterable[Path]) -> dict[str, Counter[str]]:
    """Task id -> where its outcome could not be recorded (``JournalBarrier.after_success``,
    ``DeadLetterMiddleware.on_exhausted``, ``retry publish``...) -> how often, from the
    workers' "message requeued" log lines."""
    found: dict[str, Counter[str]] = defaultdict(Counter)
    for path in logs:
        for line in path.read_text(errors="replace").splitlines():
            if "message requeued" in line and (match := _REQUEUED.search(line)):
                found[match["task_id"]][match["where"]] += 1
    return found


def _row(r: JournalEntry, killed_pids: Collection[int]) -> str:
    return (f"{r.state}#{r.attempt} pid {r.pid}{' KILLED' if r.pid in killed_pids else ''} "
            f"{r.finished_at:%H:%M:%S.%f} {r.exc_type}: {r.exc_message}")


@dataclass
class Verdict:
    tasks: int
    succeeded: int = 0
    dead_lettered: int = 0
    lost: int = 0
    ended_twice: int = 0
    touched: int = 0
    retry_rows: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    effects_repeated_after_kill: int = 0


def verify(store: Store, letters: DeadLetterStore, client: redis.Redis, tw: Any,
           submitted: Submitted, killed_pids: Collection[int], summary: str,
           shifted: Collection[str] = (), killed_at: Mapping[int, float] | None = None,
           kill_window: float | None = None,
           explain: Callable[[str], str] | None = None) -> Verdict:
    """Every check of the soak (docs/soak.md, "What it checks"). ``shifted``: tasks an
    outage may have given extra attempt rows (exempt from the exact-state check, like
    redelivered ones). A row written by a process later killed makes its task exempt
    too; with ``kill_window`` only a row written at most that many seconds before the
    kill (``killed_at``) does. Prints the figures before asserting, so a failing run
    shows them; ``explain`` adds what the caller knows of a task to a failure message."""
    ids, always_fail, key_of = submitted.ids, submitted.always_fail, submitted.key_of
    tasks = len(ids)
    # -- every task ended once: succeeded or dead-lettered, never both --------------
    rows, found = outcomes(store, letters, ids)
    succeeded = {tid for tid, rs in rows.items() if any(r.state == "success" for r in rs)}
    dead = [letter.task_id for letter in found]
    counts = Counter[str]()
    for name in (PLAIN, IDEMPOTENT):
        counts.update(journal.counts_by_state(store, task=name))
    missing = ids - succeeded - set(dead)
    # ended twice: succeeded and dead-lettered, dead-lettered twice, a second success
    # row, a second failure row
    verdict = Verdict(tasks, len(succeeded), len(dead), lost=len(missing),
                      ended_twice=len(succeeded & set(dead)) + len(dead) - len(set(dead))
                      + counts["success"] - len(succeeded)
                      + counts["failure"] - len({t for t, rs in rows.items()
                                                  if any(r.state == "failure" for r in rs)}))
    summary = (f"{summary}; succeeded {len(succeeded)}, dead-lettered {len(dead)}; "
               f"lost {verdict.lost}, ended twice {verdict.ended_twice}")
    print(summary)
    assert not missing, f"{len(missing)} tasks have no outcome; {summary}; e.g. " + "; ".join(
        f"{tid}: backend {tw.app.AsyncResult(tid).state}, redelivered "
        f"{client.get(keys.redeliveries(tid))!r}, rows "
        f"{[(r.state, r.attempt, r.pid) for r in rows.get(tid, [])]}"
        + (f" | {explain(tid)}" if explain else "")
        for tid in sorted(missing)[:8])
    assert not succeeded & set(dead), \
        f"succeeded AND dead-lettered: {sorted(succeeded & set(dead))[:5]}"
    assert len(dead) == len(set(dead)), \
        f"dead-lettered twice: {[t for t, n in Counter(dead).items() if n > 1][:5]}"
    assert len(succeeded) + len(dead) == tasks

    # -- the journal reconciles exactly -------------------------------------------
    twice_ok = {tid: rs for tid, rs in rows.items()
                if sum(r.state == "success" for r in rs) > 1}
    assert counts["success"] == len(succeeded), \
        f"{counts['success'] - len(succeeded)} extra success rows: a task ran to success " \
        "twice: " + "; ".join(
            f"{tid} (redelivered {client.get(keys.redeliveries(tid))!r}, key "
            f"{key_of.get(tid)}): " + ", ".join(
                f"{r.state}#{r.attempt} pid {r.pid}"
                f"{' KILLED' if r.pid in killed_pids else ''} {r.finished_at:%H:%M:%S.%f}"
                for r in rs) + (f" | {explain(tid)}" if explain else "")
            for tid, rs in list(twice_ok.items())[:5])
    failed_rows = [r for rs in rows.values() for r in rs if r.state == "failure"]
    unmatched = Counter(r.task_id for r in failed_rows)
    unmatched.subtract(dead)
    differ = {tid: n for tid, n in unmatched.items() if n}
    assert not differ, \
        "failure rows and dead letters differ (task id: rows minus letters): " + "; ".join(
            f"{tid} {n:+d}: " + ", ".join(_row(r, killed_pids) for r in sorted(
                rows.get(tid, []), key=lambda r: r.id)) + " | letters " + ", ".join(
                f"#{letter.id} attempts {letter.attempts} {letter.reason} "
                f"{letter.failed_at:%H:%M:%S.%f}" for letter in found
                if letter.task_id == tid) + (f" | {explain(tid)}" if explain else "")
            for tid, n in list(differ.items())[:8])
    attempts_of = {r.task_id: r.attempt for r in failed_rows}
    assert all(letter.attempts == attempts_of[letter.task_id] for letter in found)
    reasons = Counter(letter.reason for letter in found)
    assert set(reasons) <= {"max_retries", "redelivery_limit"}, (reasons, [
        (letter.task_id, letter.reason, letter.exc_type, (letter.exc_message or "")[:200],
         (letter.traceback or "")[-1500:])
        for letter in found if letter.reason not in ("max_retries", "redelivery_limit")][:5])

    # touched by a kill: redelivered, or with a row written by a process later killed (its
    # sockets may have failed under it first: a retry the prediction cannot know of)
    def cut_by_kill(r: JournalEntry) -> bool:
        if r.pid is None or r.pid not in killed_pids:
            return False
        if kill_window is None or killed_at is None or r.finished_at is None:
            return True
        return r.finished_at.timestamp() >= killed_at[r.pid] - kill_window

    touched = {tid for tid in ids if client.exists(keys.redeliveries(tid))} | {
        tid for tid, rs in rows.items() if any(cut_by_kill(r) for r in rs)}
    touched |= set(shifted)
    shared_keys = {key for key, n in Counter(key_of.values()).items() if n > 1}
    by_letter = {letter.task_id: letter for letter in found}
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
        assert len(attempts) == len(set(attempts)), f"{tid}: one attempt recorded twice: " + \
            ", ".join(_row(r, killed_pids) for r in sorted(rows.get(tid, []), key=lambda r: r.id))
        want_states, want_reason = expected(tid, always_fail[tid])
        assert states == want_states, f"{tid}: journal {states}, expected {want_states}: " + \
            ", ".join(_row(r, killed_pids) for r in sorted(rows.get(tid, []), key=lambda r: r.id))
        assert (by_letter[tid].reason if tid in by_letter else None) == want_reason
    assert counts["retry"] == retry_rows
    assert reasons["max_retries"] >= sum(always_fail.values()) - len(touched)

    # -- idempotent side effects: once per key whose call succeeded ------------------
    succeeded_keys = {key_of[tid] for tid in succeeded if tid in key_of}
    effects = {key: [int(pid) for pid in client.lrange(effect_pids_key(key), 0, -1)]
               for key in set(key_of.values())}
    assert all(int(client.get(effect_key(key)) or 0) == len(pids)
               for key, pids in effects.items())
    assert not succeeded_keys - {key for key, pids in effects.items() if pids}
    # A process SIGKILLed between a call's side effect and the store of its result (the
    # idempotency middleware's after_success) leaves the call to run once more when its
    # lease lapses: the effect and the result are two writes (docs/soak.md). Any other
    # repeat (a duplicate running beside a live holder, a call run again after its
    # result was stored) is a defect.
    repeated = {key: pids for key, pids in effects.items() if len(pids) > 1}
    unexplained = {key: pids for key, pids in repeated.items()
                   if any(pid not in killed_pids for pid in pids[:-1])}
    assert not unexplained, f"side effects repeated by live processes: {unexplained}"
    # a key with no succeeded call has an effect only if that too was cut by a kill
    assert all(pids[-1] in killed_pids for key, pids in effects.items()
               if pids and key not in succeeded_keys)
    verdict.touched, verdict.retry_rows = len(touched), retry_rows
    verdict.reasons, verdict.effects_repeated_after_kill = dict(reasons), len(repeated)
    print(f"{summary}; touched by a redelivery {len(touched)}; retry rows {retry_rows}; "
          f"dead-letter reasons {dict(reasons)}; side effects repeated after a kill "
          f"{len(repeated)}")
    return verdict
