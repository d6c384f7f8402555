"""/api/workers: the workers that answer Celery's inspect within a timeout."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from taskworks.api.context import Ctx
from taskworks.api.models import WorkerInfo, Workers

router = APIRouter(prefix="/api/workers", tags=["workers"])


def inspect_workers(app: Any, timeout: float) -> list[WorkerInfo]:
    """One broadcast each for stats and active tasks; a worker that does not answer
    within ``timeout`` seconds is not listed."""
    inspect = app.control.inspect(timeout=timeout)
    stats: dict[str, Any] = inspect.stats() or {}
    active: dict[str, Any] = inspect.active() or {}
    found = []
    for hostname in sorted(set(stats) | set(active)):
        info = stats.get(hostname) or {}
        total = info.get("total") or {}
        tasks = active.get(hostname) or []
        found.append(WorkerInfo(
            hostname=hostname, active=len(tasks),
            processed=sum(v for v in total.values() if isinstance(v, int)),
            pool={k: v for k, v in (info.get("pool") or {}).items()
                  if k in ("implementation", "max-concurrency", "processes")},
            active_tasks=[{k: t.get(k) for k in ("id", "name", "time_start", "worker_pid")}
                          for t in tasks if isinstance(t, dict)],
        ))
    return found


@router.get("", response_model=Workers)
def workers(ctx: Ctx, timeout: Annotated[float, Query(ge=0.1, le=5.0)] = 1.0) -> Workers:
    return Workers(workers=inspect_workers(ctx.tw.app, timeout), timeout=timeout)
