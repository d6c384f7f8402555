"""Every Redis key taskworks writes, in one place (arq's constants.py convention)."""

from __future__ import annotations

PREFIX = "taskworks:"

#: leader lock held by the one beat process allowed to fire schedule entries
BEAT_LEADER = PREFIX + "beat:leader"


def beat_leader(name: str = "default") -> str:
    return f"{BEAT_LEADER}:{name}"

#: how often a message was restored after its worker died, per task id
REDELIVERIES = PREFIX + "redeliveries:"
#: retries admitted per task name over the last minute, across the cluster (sorted set)
RETRY_BUDGET = PREFIX + "retry-budget:"


def redeliveries(task_id: str) -> str:
    return REDELIVERIES + task_id


def retry_budget(task_name: str) -> str:
    return RETRY_BUDGET + task_name
