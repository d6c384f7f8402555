"""Where autoscaling decisions go: a row per change in the store, the live status in Redis.

The store keeps the history (what was seen, what was decided, why); Redis keeps the
supervisor's current status with a short expiry, so ``taskworks autoscale status``, the
API and /metrics read it from any process, and a stopped supervisor shows as stopped.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import redis
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from taskworks import keys
from taskworks.logs import get_logger
from taskworks.scaling.policy import Decision, Observations
from taskworks.store.engine import Store
from taskworks.store.tables import ScalingDecision

__all__ = ["DecisionRecorder", "current_status", "recent_decisions"]

log = get_logger("taskworks.autoscale")


class DecisionRecorder:
    def __init__(self, store: Store, client: redis.Redis, status_ttl: float) -> None:
        self.store = store
        self.client = client
        self.status_ttl = max(1, int(status_ttl))
        self.hostname = socket.gethostname()

    def record(self, decision: Decision, obs: Observations) -> None:
        seen = {name: {"backlog": dict(g.backlog_by_queue), "workers": g.workers}
                for name, g in obs.groups.items()}
        rows = [ScalingDecision(
            hostname=self.hostname, group=d.group, previous=d.previous, desired=d.desired,
            backlog=d.backlog, reason=d.reason, cpu_percent=obs.cpu_percent,
            memory_percent=obs.memory_percent, observations=seen,
        ) for d in decision.changes]
        try:
            with self.store.session() as session:
                session.add_all(rows)
        except SQLAlchemyError as exc:
            # scaling goes on without its history rather than stopping
            log.error("autoscale decisions not recorded", error=str(exc).splitlines()[0])

    def publish(self, status: dict[str, Any]) -> None:
        try:
            self.client.set(keys.AUTOSCALE_STATUS, json.dumps(status), ex=self.status_ttl)
        except redis.RedisError as exc:
            log.warning("autoscale status not published", error=str(exc))


def current_status(client: redis.Redis) -> dict[str, Any] | None:
    """The running supervisor's status, or None when none runs."""
    raw = client.get(keys.AUTOSCALE_STATUS)
    return json.loads(raw) if raw else None


def recent_decisions(store: Store, limit: int = 20, group: str | None = None
                     ) -> list[dict[str, Any]]:
    stmt = select(ScalingDecision).order_by(ScalingDecision.id.desc()).limit(limit)
    if group:
        stmt = stmt.where(ScalingDecision.group == group)
    with store.session() as session:
        return [{c.key: getattr(row, c.key) for c in ScalingDecision.__table__.columns}
                for row in session.scalars(stmt)]
