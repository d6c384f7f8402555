"""What the recovery sweep reads and renews in the store: steps whose message was never
published (the publisher died between commit and publish), runs past their deadline,
steps running past their hard time limit. The sweep itself is ``WorkflowEngine.sweep``."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update

from taskworks.store.engine import Store
from taskworks.store.tables import WorkflowRun, WorkflowStepRun
from taskworks.workflows.model import RunState, StepState
from taskworks.workflows.runs import Dispatch
from taskworks.workflows.sql import aware, lock_run, now

__all__ = ["RunRecovery"]

Steps = WorkflowStepRun
Runs = WorkflowRun


class RunRecovery:
    def __init__(self, store: Store) -> None:
        self.store = store

    def undispatched(self, older_than: float) -> list[Dispatch]:
        """QUEUED steps whose message was never published (the publisher died)."""
        cutoff = now() - timedelta(seconds=older_than)
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(Steps.run_id, Steps.name, Steps.token).where(
                Steps.state == StepState.QUEUED.value, Steps.dispatched.is_(False),
                Steps.queued_at < cutoff)).all()
        return [Dispatch(r[0], r[1], r[2]) for r in rows if r[2]]

    def renew(self, stale: Dispatch) -> Dispatch | None:
        """A new token for an undispatched step: any older message becomes inert."""
        token = uuid.uuid4().hex
        with self.store.engine.begin() as conn:
            if not lock_run(conn, stale.run_id):
                return None
            renewed = conn.execute(update(Steps).where(
                Steps.run_id == stale.run_id, Steps.name == stale.name,
                Steps.token == stale.token, Steps.state == StepState.QUEUED.value,
                Steps.dispatched.is_(False),
            ).values(token=token, queued_at=now())).rowcount
        return Dispatch(stale.run_id, stale.name, token) if renewed == 1 else None

    def expired_runs(self) -> list[str]:
        with self.store.session() as session:
            return list(session.scalars(select(Runs.id).where(
                Runs.state == RunState.RUNNING.value, Runs.deadline < now())))

    def overdue_steps(self, started_before: datetime) -> list[tuple[str, str, str, str,
                                                                      int, datetime]]:
        """RUNNING steps started before a moment: (run, workflow, step, token, version,
        started_at), for the sweep to compare with each step's time limit."""
        with self.store.session() as session:
            rows = session.execute(select(
                Steps.run_id, Runs.workflow, Steps.name, Steps.token, Runs.version,
                Steps.started_at,
            ).join(Runs, Runs.id == Steps.run_id).where(
                Steps.state == StepState.RUNNING.value, Steps.started_at < started_before,
                Runs.state == RunState.RUNNING.value)).all()
        return [(r[0], r[1], r[2], r[3] or "", r[4], aware(r[5]) or now()) for r in rows]
