"""The outcome journal: one record per attempt of every task, written in batches.

One concept per module: ``writer`` (the batched, outage-proof writer), ``middleware``
(the middleware recording each attempt, and the barrier that has the row in the store
before the task returns), ``guard`` (a task that already ended is not run again),
``queries`` (reading), ``retention``, ``periods`` ("1h", "7d") and ``states``.
"""

from __future__ import annotations

from taskworks.runtime.journal.guard import OutcomeGuard
from taskworks.runtime.journal.middleware import JournalBarrier, JournalMiddleware, summarise
from taskworks.runtime.journal.periods import parse_since
from taskworks.runtime.journal.queries import (
    JournalQuery,
    RecordedOutcome,
    WindowStats,
    attempts,
    counts_by_state,
    list_entries,
    query,
    recorded_outcome,
    window_stats,
)
from taskworks.runtime.journal.retention import enforce_retention
from taskworks.runtime.journal.states import ENDS, JournalState
from taskworks.runtime.journal.values import strip_nul, values_refused
from taskworks.runtime.journal.writer import MAX_PENDING, JournalWriter

__all__ = ["ENDS", "MAX_PENDING", "JournalBarrier", "JournalMiddleware", "JournalQuery",
           "JournalState", "JournalWriter", "OutcomeGuard", "RecordedOutcome", "WindowStats",
           "attempts", "counts_by_state", "enforce_retention", "list_entries", "parse_since",
           "query", "recorded_outcome", "strip_nul", "summarise", "values_refused",
           "window_stats"]
