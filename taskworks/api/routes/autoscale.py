"""/api/autoscale: the supervisor's status and decisions; /api/autoscale/replicas: the
desired worker count per group, for KEDA's metrics-api scaler."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from taskworks.api.context import Ctx
from taskworks.api.models import Autoscale, GroupReplicas
from taskworks.scaling.record import current_status, recent_decisions
from taskworks.scaling.replicas import desired_replicas

router = APIRouter(prefix="/api/autoscale", tags=["autoscale"])


@router.get("", response_model=Autoscale)
def autoscale(ctx: Ctx, limit: Annotated[int, Query(ge=1, le=500)] = 20,
              group: Annotated[str | None, Query(max_length=128)] = None) -> Autoscale:
    status = current_status(ctx.client)
    return Autoscale(running=status is not None, status=status,
                     decisions=recent_decisions(ctx.tw.store, limit, group))


@router.get("/replicas", response_model=dict[str, GroupReplicas])
def replicas(ctx: Ctx) -> dict[str, GroupReplicas]:
    """``{group: {"desired": n, ...}}``: point KEDA's metrics-api trigger at
    ``valueLocation: <group>.desired``."""
    return {name: GroupReplicas(**found)
            for name, found in desired_replicas(ctx.tw.settings, ctx.client).items()}
