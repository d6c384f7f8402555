"""What a journal row says happened to one attempt of a task."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ENDS", "JournalState"]


class JournalState(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    #: a retry was scheduled: the task goes on
    RETRY = "retry"
    REVOKED = "revoked"
    #: a middleware postponed the task (open breaker, rate limit) without spending a
    #: retry; exc_type/exc_message say why
    DEFERRED = "deferred"


#: the states that end a task for good: a task has at most one (JOURNAL_ONE_END)
ENDS = (JournalState.SUCCESS, JournalState.FAILURE)
