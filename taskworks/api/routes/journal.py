"""/api/journal: every attempt of every task, newest first, with the CLI's filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from sqlalchemy import func, select

from taskworks.api.context import Ctx
from taskworks.api.errors import NotFound
from taskworks.api.models import ID_PATTERN, JournalItem, JournalStats
from taskworks.errors import InvalidInput
from taskworks.runtime import journal
from taskworks.runtime.journal import JournalQuery
from taskworks.store.tables import JournalEntry

router = APIRouter(prefix="/api/journal", tags=["journal"])

State = Literal["success", "failure", "retry", "revoked", "deferred"]
Severity = Literal["low", "medium", "high", "critical"]


def since_of(value: str | None, field: str = "since") -> datetime | None:
    if not value:
        return None
    try:
        return journal.parse_since(value)
    except (InvalidInput, OverflowError) as exc:  # 99999999w overflows datetime
        raise InvalidInput(field, value, "a number and a unit, like 30s, 15m, 1h, 7d, 2w"
                           ) from exc


def row(entry: object) -> JournalItem:
    return JournalItem.model_validate(entry, from_attributes=True)


@router.get("", response_model=list[JournalItem])
def journal_list(
    ctx: Ctx,
    task: Annotated[str | None, Query(max_length=255, description="task name")] = None,
    state: State | None = None,
    severity: Severity | None = None,
    since: Annotated[str | None, Query(max_length=32, description="e.g. 30m, 1h, 7d")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JournalItem]:
    q = JournalQuery(task=task, state=state, severity=severity, since=since_of(since),
                     limit=limit)
    return [row(e) for e in journal.query(ctx.tw.store, q)]


@router.get("/stats", response_model=JournalStats)
def journal_stats(ctx: Ctx, window: Annotated[int, Query(ge=10, le=7 * 86_400,
                                                          description="seconds")] = 300
                  ) -> JournalStats:
    """Attempts by state over the last ``window`` seconds: throughput and failure rate."""
    since = datetime.now(UTC) - timedelta(seconds=window)
    stmt = (select(JournalEntry.state, func.count()).where(JournalEntry.finished_at >= since)
            .group_by(JournalEntry.state))
    with ctx.tw.store.session() as session:
        counts = {state: int(n) for state, n in session.execute(stmt)}
    ended = counts.get("success", 0) + counts.get("failure", 0)
    return JournalStats(window=window, counts=counts, throughput=round(ended / window, 3),
                        failure_rate=round(counts.get("failure", 0) / ended, 4) if ended else 0.0)


@router.get("/{task_id}", response_model=list[JournalItem])
def journal_task(task_id: Annotated[str, Path(pattern=ID_PATTERN)], ctx: Ctx
                 ) -> list[JournalItem]:
    """Every attempt of one task, oldest first."""
    rows = journal.attempts(ctx.tw.store, task_id)
    if not rows:
        raise NotFound("journaled task", task_id)
    return [row(e) for e in rows]
