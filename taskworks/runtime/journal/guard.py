"""The outcome guard: a task that already ended is never run again."""

from __future__ import annotations

from typing import Any

from celery.exceptions import Ignore
from sqlalchemy.exc import SQLAlchemyError

from taskworks.logs import get_logger
from taskworks.runtime.journal.middleware import JournalMiddleware
from taskworks.runtime.journal.queries import recorded_outcome
from taskworks.runtime.middleware import Middleware, TaskContext

__all__ = ["OutcomeGuard"]

log = get_logger("taskworks.journal")


class OutcomeGuard(Middleware):
    """Acknowledges, without running it, a message whose task already has an outcome (a
    success row, or a dead letter). Two ways a worker's death leaves such a message: it
    died after recording the outcome and before acknowledging (the message is
    redelivered), or after publishing a retry and before acknowledging the attempt that
    retried (two copies of the task then run, and the second must stop once the first
    has ended). First in the chain.

    Redeliveries and retries pay the lookup; so does every task of a worker whose
    reserved messages may outlive the visibility timeout (prefetched ones wait behind up
    to ``prefetch_multiplier`` tasks of ``time_limit`` each, then run): the broker then
    hands a copy to another worker while the original waits here, and the original,
    which is not marked redelivered, must not run again once the copy has ended.
    """

    def __init__(self, journal: JournalMiddleware) -> None:
        self.journal = journal
        self._every_task: bool | None = None

    @staticmethod
    def reserved_may_outlive_visibility(conf: Any) -> bool:
        visibility = (conf.broker_transport_options or {}).get("visibility_timeout")
        limit = conf.task_time_limit
        if not visibility or not limit:
            return False
        held = (int(conf.worker_prefetch_multiplier or 1) + 1) * float(limit)
        return float(visibility) < held

    def before_task(self, ctx: TaskContext) -> None:
        if getattr(ctx.task, "is_workflow_step", False):
            return  # a step's state in its run says whether it ended (workflows/engine.py)
        if self._every_task is None:
            self._every_task = self.reserved_may_outlive_visibility(ctx.task.app.conf)
        if not self._every_task and not ctx.redelivered and not ctx.task.request.retries:
            return
        try:
            # a success of this process whose row waits for its group commit (the message
            # came back meanwhile: held past the visibility timeout) must be seen
            self.journal.writer.flush_waited_for()
            outcome = recorded_outcome(self.journal.writer.store, ctx.task_id)
        except SQLAlchemyError as exc:  # run it, as without the guard; never fail it here
            log.warning("outcome lookup failed; the task runs", task=ctx.name,
                        task_id=ctx.task_id, error=str(exc)[:200])
            return
        if not outcome.ended:
            return
        if outcome.letter_without_row:
            # died between the dead letter and its journal row (written in that order)
            assert outcome.letter is not None
            self.journal.record_dead_letter(ctx, outcome.letter)
            self.journal.wait_written(ctx)
        log.info("task already has an outcome: message acknowledged, not run again",
                 task=ctx.name, task_id=ctx.task_id,
                 outcome="success" if outcome.succeeded else "dead letter")
        raise Ignore()
