"""/api/periodic: periodic entries with their state; pause and resume one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from taskworks.api.context import Ctx
from taskworks.api.errors import NotFound
from taskworks.api.models import ID_PATTERN
from taskworks.errors import InvalidInput
from taskworks.scheduling import periodic
from taskworks.scheduling.entries import Missed

router = APIRouter(prefix="/api/periodic", tags=["periodic"])
Name = Annotated[str, Path(pattern=ID_PATTERN, description="periodic entry name")]


class PeriodicEntry(BaseModel):
    name: str
    task: str
    schedule: str = Field(description="'every 300s' or 'cron 0 2 * * *'")
    timezone: str = Field(description="IANA zone the cron fields are read in")
    missed: Missed = Field(description="what fires that were due while no beat ran do")
    missed_window: float = Field(description="seconds run_all catches up")
    paused: bool
    last_fire: datetime | None = Field(description="due time last fired or skipped")
    next_fire: datetime | None = Field(
        description="null while paused; in the past while beat is behind or down")


def _at(moment: float | None) -> datetime | None:
    return None if moment is None else datetime.fromtimestamp(moment, UTC)


def _shown(entry: periodic.EntryStatus) -> PeriodicEntry:
    return PeriodicEntry(**{**entry.as_dict(), "last_fire": _at(entry.last_fire),
                            "next_fire": _at(entry.next_fire)})


@router.get("", response_model=list[PeriodicEntry])
def entries(ctx: Ctx) -> list[PeriodicEntry]:
    """Every periodic entry, in the configuration's order."""
    return [_shown(e) for e in periodic.list_entries(ctx.tw.app.conf, ctx.client)]


@router.post("/{name}/pause", response_model=PeriodicEntry)
def pause(name: Name, ctx: Ctx) -> PeriodicEntry:
    """Stop firing the entry until it is resumed (pausing a paused entry changes nothing)."""
    try:
        return _shown(periodic.pause(ctx.tw.app.conf, ctx.client, name))
    except InvalidInput:
        raise NotFound("periodic entry", name) from None


@router.post("/{name}/resume", response_model=PeriodicEntry)
def resume(name: Name, ctx: Ctx) -> PeriodicEntry:
    """Fire the entry again from its next due time: what fell due while it was paused is
    skipped."""
    try:
        return _shown(periodic.resume(ctx.tw.app.conf, ctx.client, name))
    except InvalidInput:
        raise NotFound("periodic entry", name) from None
