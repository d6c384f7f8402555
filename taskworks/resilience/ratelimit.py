"""Cluster-wide rate limits: ``@tw.task(rate_limit="100/m")``, shared by every worker.

Celery's own ``rate_limit`` task attribute limits each worker process on its own; this
one is a token bucket in Redis (GCRA, one Lua call on the server's clock) that every
process on every host shares. The name clash is deliberate and handled: ``rate_limit`` is
a taskworks option (app.py never passes it to Celery), Celery's attribute stays unset.

- ``rate_limit="50/s"``: a limit of this task alone (named after the task).
- ``rate_limit_name="github-api"``: a limit shared by several tasks, defined once with
  ``tw.rate_limits.define("github-api", "50/s")`` (or by giving both options).

A task over its limit is deferred until its reserved slot (re-sent with a countdown,
without spending a retry), never failed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from taskworks import keys
from taskworks.broker.urls import redis_client
from taskworks.errors import InvalidInput, RateLimited
from taskworks.runtime.middleware import Middleware, TaskContext, defer

__all__ = ["PERIODS", "Rate", "RateLimitMiddleware", "RateLimits"]

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*$")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


@dataclass(frozen=True)
class Rate:
    """``count`` admissions per ``period`` seconds, bursts of at most ``burst``."""

    count: float
    period: float
    burst: int = 1

    @classmethod
    def parse(cls, text: object, *, burst: int = 1, field: str = "rate_limit") -> Rate:
        match = _RATE.match(text) if isinstance(text, str) else None
        if match is None or float(match.group(1)) <= 0:
            raise InvalidInput(field, text, 'a rate like "50/s", "100/m" or "1000/h" (N > 0)')
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise InvalidInput("burst", burst, "an integer >= 1")
        return cls(float(match.group(1)), PERIODS[match.group(2)], burst)

    @property
    def interval_us(self) -> float:
        """Microseconds between two admissions."""
        return self.period * 1_000_000 / self.count


class RateLimits:
    """Named limits, shared by the tasks that name them (``rate_limit_name=``)."""

    def __init__(self) -> None:
        self._by_name: dict[str, Rate] = {}
        self._lock = threading.Lock()

    def define(self, name: str, rate: str, *, burst: int = 1) -> Rate:
        """Define a named limit; defining it again with the same rate is a no-op."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidInput("rate_limit_name", name,
                               "1-200 characters of letters, digits and _ . : -")
        parsed = Rate.parse(rate, burst=burst)
        with self._lock:
            existing = self._by_name.setdefault(name, parsed)
        if existing != parsed:
            raise InvalidInput(f"rate limit {name!r}", rate,
                               f"the rate it is already defined with ({existing})")
        return parsed

    def get(self, name: str) -> Rate | None:
        return self._by_name.get(name)

    def names(self) -> list[str]:
        return sorted(self._by_name)


class RateLimitMiddleware(Middleware):
    """Admits a limited task when the shared bucket has a token, else defers it."""

    options = frozenset({"rate_limit", "rate_limit_name"})

    def __init__(self, broker_url: str, *, horizon: float = 60.0) -> None:
        self.broker_url = broker_url
        #: a caller reserves a slot at most this far ahead; beyond it, it asks again then
        self.horizon = horizon
        self.limits = RateLimits()
        # made now, not on first use: a threads pool's first tasks would race to make
        # one each (the soak caught one calling a script not yet set); a forked pool
        # child gets fresh connections (redis-py's pools check the pid)
        self.client = redis_client(broker_url)
        self._script = self.client.register_script(
            (resources.files("taskworks.resilience") / "ratelimit.lua").read_text())

    def validate(self, task_name: str, options: Mapping[str, Any]) -> None:
        rate = options.get("rate_limit")
        name = options.get("rate_limit_name")
        if name is None:
            if rate is not None:
                Rate.parse(rate)
            return
        if rate is not None:
            self.limits.define(name, rate)
        elif self.limits.get(name) is None:
            raise InvalidInput("rate_limit_name", name,
                               "a limit defined first with tw.rate_limits.define(name, "
                               "'N/s|m|h'), or rate_limit= given with it")

    def limit_of(self, task_name: str, options: Mapping[str, Any]) -> tuple[str, Rate] | None:
        name = options.get("rate_limit_name")
        if name is not None:
            rate = self.limits.get(name)
            if rate is None:
                raise InvalidInput("rate_limit_name", name, "a defined rate limit")
            return name, rate
        text = options.get("rate_limit")
        return (task_name, Rate.parse(text)) if text is not None else None

    def admit(self, name: str, rate: Rate, task_id: str) -> float:
        """Seconds to wait before this task may run (0: admitted now); one round trip."""
        client = self.client
        wait_us, _reserved = self._script(
            keys=list(keys.rate_limit(name, task_id)),
            args=[rate.interval_us, rate.burst, self.horizon * 1_000_000], client=client)
        return max(0.0, int(wait_us) / 1_000_000)

    def before_task(self, ctx: TaskContext) -> None:
        limit = self.limit_of(ctx.name, ctx.options)
        if limit is None:
            return
        wait = self.admit(*limit, ctx.task_id)
        if wait > 0:
            countdown = min(wait, self.horizon)
            raise defer(ctx.task, countdown, RateLimited(limit[0], countdown))
