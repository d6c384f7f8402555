"""Runs and their steps in the SQL store: the one transaction per step completion, and
those that start, cancel, time out and resume a run.

Exactly-once dispatch rests on three rules:

1. Every transaction that changes a run first takes the run's row lock (``UPDATE
   workflow_runs ... WHERE id = :run AND state = 'RUNNING'``): completions, cancel,
   resume and the sweep of one run are serialised (PostgreSQL row lock; SQLite has a
   single writer anyway), so a cancel and a completion never interleave and the
   run's ``remaining`` counter and the steps' ``waiting`` counters stay exact.
2. A step changes state only through a conditional UPDATE (``WHERE state = 'RUNNING'
   AND token = :token``, ``WHERE state = 'PENDING' AND waiting <= 0``); only the
   transaction whose UPDATE matched the row acts on it. A duplicate completion (a
   redelivered message, a late finisher after a cancel) matches nothing and does
   nothing.
3. A claimed step gets a fresh ``token``; only a message carrying the step's current
   token may run it. The message is published *after* commit; ``dispatched`` is set
   once it was published, so the sweep can republish (with a new token) a step whose
   publisher died between commit and publish, and a stray older message is ignored.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, insert, select, update

from taskworks.errors import InvalidInput
from taskworks.store.engine import Store
from taskworks.store.tables import WorkflowRun, WorkflowStepRun
from taskworks.workflows import sql
from taskworks.workflows.cache import RUN_INPUTS_MAX_BYTES, SizedLRU, json_size
from taskworks.workflows.model import OnFailure, RunState, SkipReason, StepState, Workflow
from taskworks.workflows.sql import aware, chunks, execute, lock_run, now

__all__ = ["RUNS_BOUND", "Dispatch", "Outcome", "RunStore", "Started", "rerun_set", "task_id"]

Steps = WorkflowStepRun
Runs = WorkflowRun
#: runs whose (workflow, version, input) are kept per process, at most
#: RUN_INPUTS_MAX_BYTES of inputs
RUNS_BOUND = 1000


def task_id(token: str, name: str) -> str:
    """The Celery task id of the message that runs ``name`` with ``token``."""
    return f"{token}.{name}"


@dataclass(frozen=True)
class Dispatch:
    run_id: str
    name: str
    token: str

    @property
    def task_id(self) -> str:
        return task_id(self.token, self.name)


@dataclass
class Outcome:
    """What a transaction decided, to act on after commit."""

    dispatch: list[Dispatch] = field(default_factory=list)
    revoke: list[str] = field(default_factory=list)
    run_state: RunState | None = None
    applied: bool = False


@dataclass(frozen=True)
class Started:
    attempt: int
    tries: int
    #: dependency name -> (state, skip reason, result)
    dependencies: dict[str, tuple[str, str | None, Any]] = field(default_factory=dict)


class RunStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        #: run id -> (workflow, version, input): immutable, read by every step
        self._runs: SizedLRU[str, tuple[str, int, Any]] = SizedLRU(
            RUNS_BOUND, RUN_INPUTS_MAX_BYTES)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.store.engine.begin() as conn:
            yield conn

    # -- starting ------------------------------------------------------------------
    def create_run(self, wf: Workflow, run_input: Any, run_id: str | None = None) -> tuple[
            str, list[Dispatch]]:
        run_id = run_id or str(uuid.uuid4())
        token = uuid.uuid4().hex
        at = now()
        roots = [s.name for s in wf.steps if not s.depends_on]
        with self.store.session() as session:
            session.add(Runs(
                id=run_id, workflow=wf.name, version=wf.version, input=run_input,
                state=RunState.RUNNING.value, remaining=len(wf.steps), resumes=0,
                created_at=at, updated_at=at,
                deadline=at + timedelta(seconds=wf.timeout) if wf.timeout else None))
            session.flush()
            session.execute(insert(Steps), [
                {"run_id": run_id, "name": s.name, "waiting": len(s.depends_on),
                 "attempt": 1, "tries": 0, "dispatched": False,
                 "state": (StepState.PENDING if s.depends_on else StepState.QUEUED).value,
                 "token": None if s.depends_on else token,
                 "queued_at": None if s.depends_on else at}
                for s in wf.steps
            ])
        return run_id, [Dispatch(run_id, name, token) for name in roots]

    def mark_dispatched(self, dispatches: Sequence[Dispatch]) -> None:
        by_token: dict[tuple[str, str], list[str]] = defaultdict(list)
        for d in dispatches:
            by_token[(d.run_id, d.token)].append(d.name)
        if not by_token:
            return
        with self._tx() as conn:
            for (run_id, token), names in by_token.items():
                for chunk in chunks(names):
                    execute(conn, sql.MARK_DISPATCHED,
                         {"p_run": run_id, "p_token": token, "p_names": list(chunk)})

    # -- a step's life -------------------------------------------------------------
    def start_step(self, run_id: str, name: str, token: str, *, redelivered: bool,
                   celery_id: str | None, depends_on: Sequence[str] = ()) -> Started | None:
        """QUEUED -> RUNNING for the message holding the current token; a redelivered
        message (its worker died) may take a RUNNING step again. None: not ours to run.
        The dependencies' states and results are read in the same transaction."""
        allowed = [StepState.QUEUED.value]
        if redelivered:
            allowed.append(StepState.RUNNING.value)
        with self._tx() as conn:
            row: Any = execute(conn, sql.START, {
                "p_run": run_id, "p_name": name, "p_token": token, "p_allowed": allowed,
                "p_now": now(), "p_celery_id": celery_id}).first()
            if row is None:
                return None
            deps = self._dependencies(conn, run_id, depends_on)
        return Started(attempt=row[0], tries=row[1], dependencies=deps)

    def requeue(self, run_id: str, name: str, token: str, error: str) -> bool:
        """RUNNING -> QUEUED while a retry of the same message is pending."""
        with self._tx() as conn:
            return execute(conn, sql.REQUEUE, {"p_run": run_id, "p_name": name, "p_token": token,
                                            "p_error": error}).rowcount == 1

    def defer(self, run_id: str, name: str, token: str, reason: str) -> bool:
        """RUNNING -> QUEUED without spending a try, while its deferred message waits."""
        with self._tx() as conn:
            return execute(conn, sql.DEFER, {"p_run": run_id, "p_name": name, "p_token": token,
                                          "p_error": reason}).rowcount == 1

    def run_info(self, run_id: str) -> tuple[str, int, Any]:
        """(workflow, version, input) of a run: immutable, so cached in the process."""
        found = self._runs.get(run_id)
        if found is None:
            with self.store.engine.connect() as conn:
                row: Any = execute(conn, sql.RUN_INFO, {"p_run": run_id}).first()
            if row is None:
                raise InvalidInput("run_id", run_id, "the id of a workflow run")
            found = self._runs.put(run_id, (row[0], row[1], row[2]), json_size(row[2]))
        return found

    def dependencies(self, run_id: str, names: Sequence[str]) -> dict[str, tuple[
            str, str | None, Any]]:
        """state, skip reason and result of the named steps."""
        with self.store.engine.connect() as conn:
            return self._dependencies(conn, run_id, names)

    @staticmethod
    def _dependencies(conn: Connection, run_id: str, names: Sequence[str]) -> dict[
            str, tuple[str, str | None, Any]]:
        out: dict[str, tuple[str, str | None, Any]] = {}
        for chunk in chunks(list(names)):
            rows: Any = execute(conn, sql.DEPENDENCIES, {"p_run": run_id, "p_names": list(chunk)})
            for row in rows:
                out[row[0]] = (row[1], row[2], row[3])
        return out

    def finish_step(self, wf: Workflow, run_id: str, name: str, token: str,
                    state: StepState, *, result: Any = None, error: str | None = None,
                    skip_reason: SkipReason | None = None) -> Outcome:
        """Record a step's end and claim the dependents it made ready: one transaction."""
        with self.store.engine.connect() as conn, conn.begin() as transaction:
            outcome = self._finish(conn, wf, run_id, name, token, state, result=result,
                                   error=error, skip_reason=skip_reason)
            if not outcome.applied:
                # a duplicate (undo its count: the first completion already acted), or a
                # run no longer running (nothing was changed)
                transaction.rollback()
            return outcome

    def _finish(self, conn: Connection, wf: Workflow, run_id: str, name: str, token: str,
                state: StepState, *, result: Any, error: str | None,
                skip_reason: SkipReason | None) -> Outcome:
        outcome = Outcome()
        # the run's row lock, and this step counted off, in one statement (the hot path)
        run: Any = execute(conn, sql.LOCK_AND_COUNT, {"p_run": run_id, "p_now": now()}).first()
        if run is None:
            return outcome  # cancelled, failed fast or timed out meanwhile
        recorded = execute(conn, sql.FINISH, {
            "p_run": run_id, "p_name": name, "p_token": token, "p_state": state.value,
            "p_now": now(), "p_result": result, "p_error": error,
            "p_skip_reason": skip_reason.value if skip_reason else None}).rowcount
        if recorded != 1:
            return outcome  # a duplicate: the caller rolls the count back
        outcome.applied = True
        done, ready = self._propagate(conn, wf, run_id, [(name, state, skip_reason)])
        if state is StepState.FAILED and wf.step(name).on_failure is OnFailure.FAIL_FAST:
            outcome.revoke = self._stop(conn, run_id, RunState.FAILED,
                                        error=error, failed_step=name)
            outcome.run_state = RunState.FAILED
            return outcome
        failed = run[1] is not None
        if state is StepState.FAILED and not failed:
            # continue: the first failure names the run's failure; branches go on
            execute(conn, update(Runs).where(Runs.id == run_id).values(
                failed_step=name, error=error))
            failed = True
        outcome.dispatch = self._claim(conn, run_id, ready)
        remaining = run[0]
        if done > 1:  # skips propagated: count them off too
            remaining = execute(conn, sql.COUNT_DONE, {"p_run": run_id, "p_done": done - 1}
                             ).scalar_one()
        if remaining <= 0:
            outcome.run_state = RunState.FAILED if failed else RunState.SUCCEEDED
            execute(conn, update(Runs).where(Runs.id == run_id).values(
                state=outcome.run_state.value, finished_at=now()))
            return outcome
        deadline = aware(run[2])
        if deadline is not None and deadline < now():
            outcome.revoke = self._stop(conn, run_id, RunState.FAILED,
                                        error="run timed out", failed_step=None)
            outcome.dispatch = []
            outcome.run_state = RunState.FAILED
        return outcome

    # -- the pieces of a completion ------------------------------------------------
    @staticmethod
    def _propagate(conn: Connection, wf: Workflow, run_id: str,
                   finished: list[tuple[str, StepState, SkipReason | None]],
                   ) -> tuple[int, list[str]]:
        """Count down the dependents of finished steps; skip those a skip or a failure
        reaches (transitively). Returns (steps now final, steps whose count reached 0)."""
        dependents = wf.dependents()
        done = len(finished)
        touched: list[str] = []
        while finished:
            decrement: Counter[str] = Counter()
            skips: dict[SkipReason, list[str]] = defaultdict(list)
            for name, state, reason in finished:
                failed = state is StepState.FAILED or reason is SkipReason.UPSTREAM_FAILED
                for dep_name in dependents[name]:
                    dependent = wf.step(dep_name)
                    if state is StepState.SUCCEEDED or dependent.run_if_failed or (
                            state is StepState.SKIPPED and not failed
                            and dependent.run_if_skipped):
                        decrement[dep_name] += 1
                    else:
                        skips[SkipReason.UPSTREAM_FAILED if failed
                              else SkipReason.UPSTREAM_SKIPPED].append(dep_name)
            by_count: dict[int, list[str]] = defaultdict(list)
            for dep_name, count in decrement.items():
                by_count[count].append(dep_name)
            for count, names in by_count.items():
                for chunk in chunks(names):
                    counted: Any = execute(conn, sql.DECREMENT, {
                        "p_run": run_id, "p_names": list(chunk), "p_count": count})
                    # under the run's lock these are exact: only a step that reached 0
                    # is worth the claiming UPDATE (a fan-in's join is not, 999 times)
                    touched += [row[0] for row in counted
                                if row[1] <= 0 and row[2] == StepState.PENDING.value]
            finished = []
            for reason, names in skips.items():
                for chunk in chunks(sorted(set(names))):
                    skipped = execute(conn, sql.SKIP, {
                        "p_run": run_id, "p_names": list(chunk), "p_reason": reason.value,
                        "p_now": now()}).scalars().all()
                    finished += [(n, StepState.SKIPPED, reason) for n in skipped]
            done += len(finished)
        return done, touched

    @staticmethod
    def _claim(conn: Connection, run_id: str, names: Sequence[str]) -> list[Dispatch]:
        """PENDING -> QUEUED for those whose dependencies are all done: the row count of
        this conditional UPDATE is the one decision that a step is dispatched."""
        if not names:
            return []
        token = uuid.uuid4().hex
        claimed: list[str] = []
        for chunk in chunks(sorted(set(names))):
            claimed += execute(conn, sql.CLAIM, {"p_run": run_id, "p_names": list(chunk),
                                              "p_token": token, "p_now": now()}
                            ).scalars().all()
        return [Dispatch(run_id, name, token) for name in claimed]

    @staticmethod
    def _expired(conn: Connection, run_id: str) -> bool:
        deadline = conn.scalar(select(Runs.deadline).where(Runs.id == run_id))
        moment = aware(deadline)
        return moment is not None and moment < now()

    @staticmethod
    def _stop(conn: Connection, run_id: str, state: RunState, *, error: str | None,
              failed_step: str | None) -> list[str]:
        """End a locked run: every unfinished step CANCELLED; returns the Celery task ids
        of those that were running (or waiting for a retry), to revoke after commit."""
        at = now()
        execute(conn, update(Runs).where(Runs.id == run_id).values(
            state=state.value, finished_at=at, remaining=0, error=error,
            failed_step=failed_step))
        live: Any = execute(conn, update(Steps).where(
            Steps.run_id == run_id,
            Steps.state.in_([StepState.QUEUED.value, StepState.RUNNING.value]),
        ).values(state=StepState.CANCELLED.value, finished_at=at).returning(
            Steps.task_id)).scalars().all()
        execute(conn, update(Steps).where(
            Steps.run_id == run_id, Steps.state == StepState.PENDING.value,
        ).values(state=StepState.CANCELLED.value, finished_at=at))
        # the ids of messages that started (recorded at start); a message not yet started
        # needs no revoke: it finds its step CANCELLED and does nothing
        return [tid for tid in live if tid]

    # -- run-level operations --------------------------------------------------------
    def cancel(self, run_id: str) -> Outcome:
        """Idempotent: a run already final is left as it is."""
        outcome = Outcome()
        with self._tx() as conn:
            if not lock_run(conn, run_id):
                self._require(conn, run_id)
                return outcome
            outcome.revoke = self._stop(conn, run_id, RunState.CANCELLED,
                                        error="cancelled", failed_step=None)
            outcome.run_state = RunState.CANCELLED
            outcome.applied = True
        return outcome

    def time_out(self, run_id: str) -> Outcome:
        outcome = Outcome()
        with self._tx() as conn:
            if not lock_run(conn, run_id) or not self._expired(conn, run_id):
                return outcome
            outcome.revoke = self._stop(conn, run_id, RunState.FAILED,
                                        error="run timed out", failed_step=None)
            outcome.run_state = RunState.FAILED
            outcome.applied = True
        return outcome

    def resume(self, wf: Workflow, run_id: str) -> Outcome:
        """Run again the failed, cancelled and failure-skipped steps and everything
        downstream of them; succeeded steps keep their results."""
        outcome = Outcome()
        with self._tx() as conn:
            reopened = execute(conn, update(Runs).where(
                Runs.id == run_id,
                Runs.state.in_([RunState.FAILED.value, RunState.CANCELLED.value]),
            ).values(state=RunState.RUNNING.value, error=None, failed_step=None,
                     finished_at=None, updated_at=now(), resumes=Runs.resumes + 1,
                     deadline=now() + timedelta(seconds=wf.timeout) if wf.timeout else None,
                     )).rowcount
            if reopened != 1:
                state = self._require(conn, run_id)
                raise InvalidInput("run", run_id,
                                   f"a FAILED or CANCELLED run to retry (it is {state})")
            states = {row[0]: (row[1], row[2]) for row in conn.execute(select(
                Steps.name, Steps.state, Steps.skip_reason).where(Steps.run_id == run_id))}
            rerun = rerun_set(wf, states)
            by_waiting: dict[int, list[str]] = defaultdict(list)
            for name in rerun:
                by_waiting[sum(1 for d in wf.step(name).depends_on if d in rerun)].append(name)
            for waiting, names in by_waiting.items():
                for chunk in chunks(names):
                    execute(conn, update(Steps).where(
                        Steps.run_id == run_id, Steps.name.in_(chunk),
                    ).values(state=StepState.PENDING.value, waiting=waiting,
                             attempt=Steps.attempt + 1, tries=0, token=None, result=None,
                             error=None, skip_reason=None, started_at=None,
                             finished_at=None, queued_at=None, dispatched=False))
            execute(conn, update(Runs).where(Runs.id == run_id).values(remaining=len(rerun)))
            outcome.dispatch = self._claim(conn, run_id, by_waiting.get(0, []))
            outcome.run_state = RunState.RUNNING
            outcome.applied = True
        return outcome

    @staticmethod
    def _require(conn: Connection, run_id: str) -> str:
        state = conn.scalar(select(Runs.state).where(Runs.id == run_id))
        if state is None:
            raise InvalidInput("run_id", run_id, "the id of a workflow run")
        return str(state)


def rerun_set(wf: Workflow, states: dict[str, tuple[str, str | None]]) -> set[str]:
    """Steps a resume runs again: failed, cancelled, skipped because of a failure, and
    every step downstream of those that has not succeeded. A join that ran over failed
    dependencies (``run_if_failed``) runs again, and so does everything after it: its
    result changes once the failed dependencies succeed."""
    seeds = {
        name for name, (state, reason) in states.items()
        if state in (StepState.FAILED.value, StepState.CANCELLED.value)
        or (state == StepState.SKIPPED.value and reason == SkipReason.UPSTREAM_FAILED.value)
    }
    dependents = wf.dependents()
    rerun: set[str] = set()
    todo = [(name, False) for name in seeds]
    while todo:
        name, after_join = todo.pop()
        succeeded = states.get(name, ("", None))[0] == StepState.SUCCEEDED.value
        if name in rerun or (succeeded and not after_join and not wf.step(name).run_if_failed):
            continue
        rerun.add(name)
        after_join = after_join or wf.step(name).run_if_failed
        todo += [(d, after_join) for d in dependents.get(name, [])]
    return rerun
