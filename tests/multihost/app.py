"""The app the multi-host workers run (``--app tests.multihost.app:tw``): settings come
from the environment of their namespace; the test process builds the same app with
``make_app(settings)`` pointed at host A.

Every task returns the Celery hostname it ran on, so results say where work happened.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from celery import current_task
from sqlalchemy import text

from taskworks import Taskworks
from taskworks.runtime.retry import RetryPolicy
from taskworks.settings import Settings

#: a redelivery after a lost host counts as a try: leave room for one, and for a retry
#: of a body that met the broker while it restarted
RETRY = RetryPolicy(max_retries=3, base_delay=0.2, jitter=False)
EFFECTS_DDL = ("CREATE TABLE IF NOT EXISTS mh_effects ("
               "key TEXT NOT NULL, host TEXT NOT NULL, at TIMESTAMPTZ DEFAULT now())")


def make_app(settings: Settings | None = None) -> Taskworks:
    tw = Taskworks(settings=settings)

    def started(self: Any, label: str) -> str:
        """Record that a body started, and where (the test watches it to time faults)."""
        # a workflow step's body runs inside the step wrapper: ask the task running now
        host = str(current_task.request.hostname)
        _redis(tw).rpush("mh:started", f"{label}|{host}")
        return host

    @tw.task(name="mh.work", bind=True, retry_policy=RETRY)
    def work(self: Any, label: str, seconds: float = 0.0) -> str:
        host = started(self, label)
        time.sleep(seconds)
        return host

    @tw.task(name="mh.effect", bind=True, idempotent=True, retry_policy=RETRY)
    def effect(self: Any, key: str, seconds: float) -> str:
        """An idempotent task with a side effect on host A: one row in ``mh_effects`` per
        execution of the body that got that far (no unique key: a repeat would show)."""
        host = started(self, key)
        time.sleep(seconds)
        with tw.store.session() as session:
            session.execute(text("INSERT INTO mh_effects (key, host) VALUES (:k, :h)"),
                            {"k": key, "h": host})
        return host

    @tw.task(name="mh.step", bind=True, retry_policy=RETRY)
    def step(self: Any, input: Any = None, results: dict[str, Any] | None = None,
             label: str = "", seconds: float = 0.0) -> dict[str, Any]:
        """A workflow step: the sum of its dependencies' ``total`` (or the run input's
        ``x``) plus one, and where it ran."""
        host = started(self, label)
        time.sleep(seconds)
        base = (sum(r["total"] for r in results.values()) if results
                else int((input or {}).get("x", 0)))
        return {"total": base + 1, "host": host}

    def slow_map(params: Mapping[str, Any], items: Iterable[tuple[int, Any]]) -> dict[str, int]:
        total = count = 0
        for _, data in items:
            total += int(data["v"])
            count += 1
        time.sleep(float(params.get("sleep", 0)))
        return {"sum": total, "count": count}

    def reduce(params: Mapping[str, Any], partials: Sequence[Any]) -> dict[str, int]:
        return {"sum": sum(p["sum"] for p in partials),
                "count": sum(p["count"] for p in partials)}

    tw.jobs.functions.custom("mh.slow_sum", map=slow_map, reduce=reduce)
    return tw


def _redis(tw: Taskworks) -> Any:
    import redis

    return redis.Redis.from_url(tw.settings.effective_broker_url)


tw = make_app()
