"""Desired replicas per worker group for a cluster autoscaler (Kubernetes + KEDA).

In a cluster the supervisor does not start processes: KEDA's metrics-api scaler reads
this number per group and the HPA sets the Deployment's replicas. The number is the
policy's stateless part: ceil(backlog / target_backlog) within min and max, and max at
once for an emergency (a queue deeper than 2x queue_threshold). Cooldown and hysteresis
belong to the HPA there (KEDA's ``cooldownPeriod`` and the HPA's stabilization window);
the machine's CPU and memory ceilings to the cluster's resource requests.
"""

from __future__ import annotations

import math
from typing import Any

import redis

from taskworks.monitoring.queues import queue_depths
from taskworks.settings import Settings

__all__ = ["desired_replicas"]


def desired_replicas(settings: Settings, client: redis.Redis) -> dict[str, dict[str, Any]]:
    queues = sorted({q for g in settings.worker_groups.values() for q in g.queues})
    depths = queue_depths(client, queues)
    found: dict[str, dict[str, Any]] = {}
    for name, group in settings.worker_groups.items():
        backlog = {q: depths[q].backlog for q in group.queues}
        total = sum(backlog.values())
        emergency = any(n > 2 * group.queue_threshold for n in backlog.values())
        wanted = group.max_workers if emergency else math.ceil(total / group.target_backlog)
        found[name] = {
            "desired": min(group.max_workers, max(group.min_workers, wanted)),
            "backlog": total, "queues": backlog, "emergency": emergency,
            "min": group.min_workers, "max": group.max_workers,
        }
    return found
