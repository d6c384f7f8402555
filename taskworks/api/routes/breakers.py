"""/api/breakers: every circuit breaker with its state; reset one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from taskworks.api.context import Ctx
from taskworks.api.errors import NotFound
from taskworks.api.models import BREAKER_PATTERN, Breaker, BreakerReset
from taskworks.errors import InvalidInput

router = APIRouter(prefix="/api/breakers", tags=["breakers"])
Name = Annotated[str, Path(pattern=BREAKER_PATTERN, description="breaker name")]


@router.get("", response_model=list[Breaker])
def breakers(ctx: Ctx) -> list[Breaker]:
    return [Breaker(**b.as_dict()) for b in ctx.tw.breakers.list()]


def _known(ctx: Ctx, name: str) -> str:
    try:
        ctx.tw.breakers.show(name, recent=0)
    except InvalidInput:
        raise NotFound("breaker", name) from None
    return name


@router.get("/{name:path}", response_model=Breaker)
def breaker(name: Name, ctx: Ctx,
            recent: Annotated[int, Query(ge=0, le=100)] = 20) -> Breaker:
    """State, counters and the last ``recent`` transitions (newest first)."""
    return Breaker(**ctx.tw.breakers.show(_known(ctx, name), recent).as_dict())


@router.post("/{name:path}/reset", response_model=Breaker)
def reset(name: Name, ctx: Ctx, body: BreakerReset | None = None) -> Breaker:
    """Close the breaker now, whatever its state (journaled as a transition)."""
    reason = body.reason if body else "reset from the API"
    ctx.tw.breakers.reset(_known(ctx, name), reason)
    return Breaker(**ctx.tw.breakers.show(name, 20).as_dict())
