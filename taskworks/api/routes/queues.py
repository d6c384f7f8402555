"""/api/queues: depth of every queue, waiting and reserved-but-unacknowledged."""

from __future__ import annotations

from fastapi import APIRouter

from taskworks.api.context import Ctx
from taskworks.api.models import QueueInfo
from taskworks.monitoring.queues import queue_depths

router = APIRouter(prefix="/api/queues", tags=["queues"])


@router.get("", response_model=list[QueueInfo])
def queues(ctx: Ctx) -> list[QueueInfo]:
    depths = queue_depths(ctx.client, ctx.tw.queue_names())
    return [QueueInfo(name=name, waiting=d.waiting, unacked=d.unacked, backlog=d.backlog)
            for name, d in depths.items()]
