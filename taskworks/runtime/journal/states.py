"""What a journal row says happened to one attempt of a task."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ENDS", "OUTSIDE", "JournalState"]


class JournalState(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    #: a retry was scheduled: the task goes on
    RETRY = "retry"
    REVOKED = "revoked"
    #: a middleware postponed the task (open breaker, rate limit) without spending a
    #: retry; exc_type/exc_message say why
    DEFERRED = "deferred"
    #: published to run later: the durable schedule keeps it until due (result: when)
    SCHEDULED = "scheduled"
    #: not started before its deadline (``expires``, ``start_within``): never run
    EXPIRED = "expired"


#: the states that end a task for good: a task has at most one (JOURNAL_ONE_END)
ENDS = (JournalState.SUCCESS, JournalState.FAILURE)
#: rows written outside the attempt's own execution (by a producer, or by the worker
#: before running it): never the running task's row that the barrier waits for
OUTSIDE = (JournalState.REVOKED, JournalState.SCHEDULED, JournalState.EXPIRED)
