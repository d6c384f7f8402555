"""The hot-path statements of the engine, built once with bind parameters.

Building a statement costs more than running it on SQLite; these are constructed at
import and compiled once per dialect (SQLAlchemy's statement cache). Bind names carry a
``p_`` prefix: a bind may not share its name with a column of an UPDATE's SET clause.
The helpers at the end run them: ``execute``, ``chunks`` of names per ``IN (...)``,
``lock_run`` (rule 1 of runs.py) and the store's clock (``now``, ``aware``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Connection, CursorResult, DateTime, Table, bindparam, select, update

from taskworks.store.tables import WorkflowRun, WorkflowStepRun
from taskworks.workflows.model import RunState, StepState

S: Table = WorkflowStepRun.__table__  # type: ignore[assignment]
R: Table = WorkflowRun.__table__  # type: ignore[assignment]
TS = DateTime(timezone=True)


def p(name: str, **kw: Any) -> Any:
    return bindparam(f"p_{name}", **kw)


NOW = p("now", type_=TS)
IN_NAMES = S.c.name.in_(p("names", expanding=True))
THIS_STEP = (S.c.run_id == p("run")) & (S.c.name == p("name")) & (S.c.token == p("token"))

LOCK_RUN = update(R).where(R.c.id == p("run"), R.c.state == RunState.RUNNING.value).values(
    updated_at=NOW)

START = update(S).where(THIS_STEP, S.c.state.in_(p("allowed", expanding=True))).values(
    state=StepState.RUNNING.value, tries=S.c.tries + 1, started_at=NOW,
    task_id=p("celery_id"), dispatched=True,
).returning(S.c.attempt, S.c.tries)

REQUEUE = update(S).where(THIS_STEP, S.c.state == StepState.RUNNING.value).values(
    state=StepState.QUEUED.value, error=p("error"))

#: a deferral (the step task's breaker is open, its rate limit is spent): back to QUEUED
#: and the execution it did not have is given back
DEFER = update(S).where(THIS_STEP, S.c.state == StepState.RUNNING.value).values(
    state=StepState.QUEUED.value, tries=S.c.tries - 1, error=p("error"))

FINISH = update(S).where(THIS_STEP, S.c.state == StepState.RUNNING.value).values(
    state=p("state"), finished_at=NOW, result=p("result", type_=JSON), error=p("error"),
    skip_reason=p("skip_reason"))

DECREMENT = update(S).where(S.c.run_id == p("run"), IN_NAMES).values(
    waiting=S.c.waiting - p("count"),
).returning(S.c.name, S.c.waiting, S.c.state)

SKIP = update(S).where(S.c.run_id == p("run"), IN_NAMES,
                       S.c.state == StepState.PENDING.value).values(
    state=StepState.SKIPPED.value, skip_reason=p("reason"), finished_at=NOW,
).returning(S.c.name)

CLAIM = update(S).where(S.c.run_id == p("run"), IN_NAMES, S.c.state == StepState.PENDING.value,
                        S.c.waiting <= 0).values(
    state=StepState.QUEUED.value, token=p("token"), queued_at=NOW, dispatched=False,
).returning(S.c.name)

LOCK_AND_COUNT = update(R).where(R.c.id == p("run"), R.c.state == RunState.RUNNING.value).values(
    updated_at=NOW, remaining=R.c.remaining - 1,
).returning(R.c.remaining, R.c.failed_step, R.c.deadline)

COUNT_DONE = update(R).where(R.c.id == p("run")).values(
    remaining=R.c.remaining - p("done"),
).returning(R.c.remaining)

MARK_DISPATCHED = update(S).where(S.c.run_id == p("run"), S.c.token == p("token"),
                                  IN_NAMES).values(dispatched=True)

RUN_INFO = select(R.c.workflow, R.c.version, R.c.input).where(R.c.id == p("run"))

DEPENDENCIES = select(S.c.name, S.c.state, S.c.skip_reason, S.c.result).where(
    S.c.run_id == p("run"), IN_NAMES)


#: names per IN (...) list: well under SQLite's and PostgreSQL's parameter limits
CHUNK = 2000


def chunks(names: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(names), CHUNK):
        yield names[i:i + CHUNK]


def execute(conn: Connection, stmt: Any, params: dict[str, Any] | None = None,
            ) -> CursorResult[Any]:
    return conn.execute(stmt, params or {})


def lock_run(conn: Connection, run_id: str) -> bool:
    """Take the row lock of a RUNNING run (runs.py, rule 1); False when it is not running."""
    return execute(conn, LOCK_RUN, {"p_run": run_id, "p_now": now()}).rowcount == 1


def now() -> datetime:
    return datetime.now(UTC)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they were written as UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment
