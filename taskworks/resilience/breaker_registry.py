"""``tw.breakers``: breakers by name, with defaults from settings, and their inspection.

A name used without registration (``@tw.task(breaker="payments")``) gets the settings'
defaults (``[breaker]`` section); ``register`` sets a name's own configuration and
``register_family`` one for every name with a prefix (http_call's ``http:<host>``).
Every process must register the same configuration for a name.
"""

from __future__ import annotations

import builtins
import threading
from typing import Any

from taskworks.broker.urls import redis_client
from taskworks.errors import InvalidInput
from taskworks.resilience.breaker import (
    BreakerStatus,
    CircuitBreaker,
    check_name,
    known_names,
    read_status,
)
from taskworks.resilience.fallback import Fallback, FallbackFunctions
from taskworks.settings import BreakerSettings

__all__ = ["Breakers"]


class Breakers:
    def __init__(self, redis_url: str, defaults: BreakerSettings | None = None) -> None:
        self.redis_url = redis_url
        self.defaults = defaults or BreakerSettings()
        self.fallbacks = FallbackFunctions()
        self._configs: dict[str, dict[str, Any]] = {}
        self._families: dict[str, dict[str, Any]] = {}
        self._built: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()
        # made now, not on first use: a threads pool's first tasks would race to make
        # one each (a dropped client closes its pool under whoever holds it); a forked
        # pool child gets fresh connections (redis-py's pools check the pid)
        self.client = redis_client(redis_url)

    def _inherited(self, name: str) -> dict[str, Any]:
        """The settings' defaults, overridden by the longest matching family's."""
        base = {"failure_threshold": self.defaults.failure_threshold,
                "reset_timeout": self.defaults.reset_timeout,
                "probe_timeout": self.defaults.probe_timeout,
                "idle_ttl": self.defaults.idle_days * 86_400}
        family = max((p for p in self._families if name.startswith(p)), key=len, default=None)
        return {**base, **(self._families[family] if family is not None else {})}

    def _config(self, name: str) -> dict[str, Any]:
        return {**self._inherited(name), **self._configs.get(name, {})}

    def register(self, name: str, **config: Any) -> CircuitBreaker:
        """Set ``name``'s configuration (CircuitBreaker keywords over the defaults)."""
        check_name(name)
        breaker = CircuitBreaker(name, self.client, **{**self._inherited(name), **config})
        with self._lock:
            self._configs[name] = config
            self._built[name] = breaker
        return breaker

    def register_family(self, prefix: str, **config: Any) -> None:
        """Configuration for every breaker whose name starts with ``prefix``."""
        check_name(prefix)
        CircuitBreaker(prefix, self.client, **config)  # validates now, not at first use
        with self._lock:
            self._families[prefix] = config
            self._built = {n: b for n, b in self._built.items() if n in self._configs}

    def get(self, name: str) -> CircuitBreaker:
        """The breaker called ``name``, built on first use."""
        breaker = self._built.get(name)
        if breaker is None:
            breaker = CircuitBreaker(check_name(name), self.client, **self._config(name))
            with self._lock:
                breaker = self._built.setdefault(name, breaker)
        return breaker

    def names(self) -> builtins.list[str]:
        """Registered breakers and every breaker with state in Redis."""
        return sorted(set(self._configs) | known_names(self.client))

    def list(self) -> builtins.list[BreakerStatus]:
        return [read_status(self.client, name) for name in self.names()]

    def _known(self, name: str) -> str:
        if name not in self._configs and name not in known_names(self.client):
            known = ", ".join(self.names()) or "none yet"
            raise InvalidInput("breaker", name, f"the name of a known breaker ({known})")
        return name

    def show(self, name: str, recent: int = 20) -> BreakerStatus:
        """State, counters and the ``recent`` last transitions (newest first)."""
        return read_status(self.client, self._known(name), recent)

    def reset(self, name: str, reason: str = "reset by operator") -> BreakerStatus:
        """Close ``name`` now, whatever its state (journaled as a transition)."""
        self.get(self._known(name)).reset(reason)
        return self.show(name)

    def fallback(self, name: str, *, ttl: float | None = 3600.0,
                 function: str | None = None) -> Fallback:
        """A Fallback over breaker ``name``: cached last good results, or ``function``
        (registered in ``self.fallbacks``)."""
        return Fallback(self.get(name), ttl, function, self.fallbacks)
