"""Reading runs and their steps for status, listings and dead-letter replays (no locks:
what a reader sees is a committed state)."""

from __future__ import annotations

from sqlalchemy import select

from taskworks.errors import InvalidInput
from taskworks.store.engine import Store
from taskworks.store.tables import WorkflowRun, WorkflowStepRun

__all__ = ["RunQueries"]

Steps = WorkflowStepRun
Runs = WorkflowRun


class RunQueries:
    def __init__(self, store: Store) -> None:
        self.store = store

    def run_of_task(self, task_id: str) -> str | None:
        """The run of the step that last ran under this Celery task id, if any."""
        with self.store.session() as session:
            found: str | None = session.scalar(
                select(Steps.run_id).where(Steps.task_id == task_id).limit(1))
        return found

    def run_row(self, run_id: str) -> WorkflowRun:
        with self.store.session() as session:
            row = session.get(Runs, run_id)
            if row is None:
                raise InvalidInput("run_id", run_id, "the id of a workflow run")
            session.expunge(row)
            return row

    def step_rows(self, run_id: str) -> list[WorkflowStepRun]:
        with self.store.session() as session:
            rows = list(session.scalars(select(Steps).where(Steps.run_id == run_id)))
            for row in rows:
                session.expunge(row)
            return rows

    def runs(self, workflow: str | None = None, limit: int = 50) -> list[WorkflowRun]:
        """Runs, newest first (of one workflow when named)."""
        with self.store.session() as session:
            stmt = select(Runs).order_by(Runs.created_at.desc()).limit(limit)
            if workflow:
                stmt = stmt.where(Runs.workflow == workflow)
            rows = list(session.scalars(stmt))
            for row in rows:
                session.expunge(row)
            return rows
