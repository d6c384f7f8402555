"""/api/health: can this process reach the broker and the store? (no token needed:
load balancers and probes ask it; it tells nothing but up or down)."""

from __future__ import annotations

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from taskworks.api.context import Ctx
from taskworks.api.models import Health

router = APIRouter(prefix="/api/health", tags=["health"])


@router.get("", response_model=Health, responses={503: {"model": Health}})
def health(ctx: Ctx) -> JSONResponse:
    errors: dict[str, str] = {}
    try:
        ctx.client.ping()
    except redis.RedisError as exc:
        errors["broker"] = type(exc).__name__
    try:
        with ctx.tw.store.session() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        errors["store"] = type(exc).__name__
    body = Health(status="degraded" if errors else "ok", broker="broker" not in errors,
                  store="store" not in errors, errors=errors)
    return JSONResponse(body.model_dump(), status_code=503 if errors else 200)
