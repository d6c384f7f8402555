"""/api/dlq: the dead-letter store: list, show, replay, purge."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from taskworks.api.context import Ctx
from taskworks.api.errors import NotFound
from taskworks.api.models import DeadLetterItem, Purged, Replay, Replayed
from taskworks.errors import InvalidInput
from taskworks.redaction import Redactor
from taskworks.runtime.dlq import DeadLetterFilter, shown
from taskworks.store.tables import DeadLetter

router = APIRouter(prefix="/api/dlq", tags=["dead letters"])

TaskQ = Annotated[str | None, Query(max_length=255, description="task name")]
ExcQ = Annotated[str | None, Query(max_length=255, description="exception type name")]
SinceQ = Annotated[str | None, Query(max_length=32, description="failed within, e.g. 1h")]
LetterId = Annotated[int, Path(ge=1, le=2**62)]


def _filter(task: str | None, exception: str | None, since: str | None) -> DeadLetterFilter:
    return DeadLetterFilter.parse(task=task, exc_type=exception, since=since)


def _not_found(exc: InvalidInput) -> Exception:
    """An unknown letter id is a 404; any other bad input stays a 422."""
    return NotFound("dead letter", exc.value) if exc.field == "id" else exc


def item(ctx: Ctx, row: DeadLetter) -> DeadLetterItem:
    """A letter with its secret-looking arguments hidden (the row keeps them for replay)."""
    redact = Redactor(ctx.tw.settings.journal.redact_keys)
    return DeadLetterItem.model_validate(shown(row, redact))


@router.get("", response_model=list[DeadLetterItem])
def dlq_list(ctx: Ctx, task: TaskQ = None, exception: ExcQ = None, since: SinceQ = None,
             limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[DeadLetterItem]:
    """Dead letters, newest first."""
    rows = ctx.tw.dead_letters.find(_filter(task, exception, since), limit)
    return [item(ctx, r) for r in rows]


@router.get("/{letter_id}", response_model=DeadLetterItem)
def dlq_show(letter_id: LetterId, ctx: Ctx) -> DeadLetterItem:
    try:
        return item(ctx, ctx.tw.dead_letters.get(letter_id))
    except InvalidInput as exc:
        raise _not_found(exc) from None


@router.post("/replay", response_model=Replayed)
def dlq_replay(body: Replay, ctx: Ctx) -> Replayed:
    """Submit dead letters again: by ``ids``, or ``all`` matching ``filters``."""
    f = body.filters
    try:
        replayed = ctx.tw.dead_letters.replay_selection(
            body.ids, all=body.all, matching=_filter(f.task, f.exception, f.since))
    except InvalidInput as exc:
        raise _not_found(exc) from None
    for new_id in replayed.values():
        ctx.remember(new_id)
    return Replayed(replayed=replayed)


@router.post("/{letter_id}/replay", response_model=Replayed)
def dlq_replay_one(letter_id: LetterId, ctx: Ctx) -> Replayed:
    return dlq_replay(Replay(ids=[letter_id]), ctx)


@router.delete("", response_model=Purged)
def dlq_purge(ctx: Ctx, task: TaskQ = None, exception: ExcQ = None, since: SinceQ = None,
              all: Annotated[bool, Query(description="required to purge without filters")
                             ] = False) -> Purged:
    """Delete the dead letters matching the filters (every one with ``all=true``)."""
    return Purged(deleted=ctx.tw.dead_letters.purge(_filter(task, exception, since), all=all))


@router.delete("/{letter_id}", response_model=Purged)
def dlq_delete(letter_id: LetterId, ctx: Ctx) -> Purged:
    """Delete one dead letter."""
    try:
        ctx.tw.dead_letters.delete(letter_id)
    except InvalidInput as exc:
        raise _not_found(exc) from None
    return Purged(deleted=1)
