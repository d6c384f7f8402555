"""/api/journal: every attempt of every task, newest first, with the CLI's filters."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Query

from taskworks.api.context import Ctx
from taskworks.api.errors import NotFound
from taskworks.api.models import ID_PATTERN, JournalItem, JournalStats
from taskworks.runtime import journal
from taskworks.runtime.journal import JournalState
from taskworks.runtime.severity import Severity

router = APIRouter(prefix="/api/journal", tags=["journal"])


def row(entry: object) -> JournalItem:
    return JournalItem.model_validate(entry, from_attributes=True)


@router.get("", response_model=list[JournalItem])
def journal_list(
    ctx: Ctx,
    task: Annotated[str | None, Query(max_length=255, description="task name")] = None,
    state: JournalState | None = None,
    severity: Severity | None = None,
    since: Annotated[str | None, Query(max_length=32, description="e.g. 30m, 1h, 7d")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JournalItem]:
    entries = journal.list_entries(ctx.tw.store, task=task, state=state, severity=severity,
                                   since=since, limit=limit)
    return [row(e) for e in entries]


@router.get("/stats", response_model=JournalStats)
def journal_stats(ctx: Ctx, window: Annotated[int, Query(ge=10, le=7 * 86_400,
                                                          description="seconds")] = 300
                  ) -> JournalStats:
    """Attempts by state over the last ``window`` seconds: throughput and failure rate."""
    return JournalStats(**asdict(journal.window_stats(ctx.tw.store, window)))


@router.get("/{task_id}", response_model=list[JournalItem])
def journal_task(task_id: Annotated[str, Path(pattern=ID_PATTERN)], ctx: Ctx
                 ) -> list[JournalItem]:
    """Every attempt of one task, oldest first."""
    rows = journal.attempts(ctx.tw.store, task_id)
    if not rows:
        raise NotFound("journaled task", task_id)
    return [row(e) for e in rows]
