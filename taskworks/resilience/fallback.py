"""Fallback answers for breaker-guarded calls (the patterns guide's get_cached_api_response,
safely).

A ``Fallback`` keeps the last good result of each call (JSON in Redis, with a TTL; never
pickle) and, when the breaker is open or the call fails, answers with it, marked::

    {"status": "fallback", "value": ..., "cached_at": "2026-...", "source": "cache",
     "reason": "BreakerOpen: ..."}

Without a cached value it calls a fallback function registered by name (``source:
"function"``, ``cached_at: None``); without either, the original error propagates.
Exceptions the breaker does not count as failures (a caller's bad input) are raised as is.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from taskworks import keys
from taskworks.errors import BreakerOpen, InvalidInput
from taskworks.logs import get_logger
from taskworks.resilience.breaker import CircuitBreaker

__all__ = ["Fallback", "FallbackFunction", "FallbackFunctions", "derive_key", "marked"]

log = get_logger("taskworks.fallback")

FallbackFunction = Callable[..., Any]


class FallbackFunctions:
    """Fallback functions registered by name: ``@fallbacks.register("cached_prices")``."""

    def __init__(self) -> None:
        self._by_name: dict[str, FallbackFunction] = {}

    def register(self, name: str, fn: FallbackFunction | None = None) -> Any:
        if not isinstance(name, str) or not name:
            raise InvalidInput("fallback name", name, "a non-empty string")

        def add(func: FallbackFunction) -> FallbackFunction:
            if not callable(func):
                raise InvalidInput("fallback function", func, "a callable")
            self._by_name[name] = func
            return func

        return add(fn) if fn is not None else add

    def get(self, name: str) -> FallbackFunction:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none registered"
            raise InvalidInput("fallback", name,
                               f"the name of a registered fallback function ({known})") from None

    def names(self) -> list[str]:
        return sorted(self._by_name)


def derive_key(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the function's name and arguments."""
    try:
        canonical = json.dumps([getattr(fn, "__qualname__", repr(fn)), list(args), kwargs],
                               sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        raise InvalidInput("fallback_key", None,
                           "a key string, since these arguments are not JSON") from None
    return hashlib.sha256(canonical.encode()).hexdigest()


def marked(value: Any, cached_at: str | None, source: str, reason: BaseException) -> dict[str, Any]:
    return {"status": "fallback", "value": value, "cached_at": cached_at, "source": source,
            "reason": f"{type(reason).__name__}: {reason}"}


@dataclass(frozen=True)
class Fallback:
    """A breaker-guarded call with a cached or computed answer when the downstream is out."""

    breaker: CircuitBreaker
    #: seconds a good result is kept; None: keep nothing (function fallback only)
    ttl: float | None = 3600.0
    #: the name of a function in ``functions`` to call when nothing is cached
    function: str | None = None
    functions: FallbackFunctions | None = None

    def __post_init__(self) -> None:
        if self.ttl is not None and (not isinstance(self.ttl, int | float) or self.ttl <= 0):
            raise InvalidInput("ttl", self.ttl, "seconds > 0, or None to cache nothing")
        if self.function is not None:
            if self.functions is None:
                raise InvalidInput("functions", None, "the registry that holds the function")
            self.functions.get(self.function)  # unknown name: an error now, not when down

    def call(self, fn: Callable[..., Any], *args: Any, fallback_key: str | None = None,
             **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` through the breaker; a marked fallback when it cannot."""
        key = fallback_key if fallback_key is not None else derive_key(fn, args, kwargs)
        try:
            result = self.breaker.call(fn, *args, **kwargs)
        except BreakerOpen as exc:
            return self._answer(key, exc, args, kwargs)
        except Exception as exc:
            if self.breaker.config.outcome(exc) != "failure":
                raise  # not the downstream's fault: a fallback would hide a bug
            return self._answer(key, exc, args, kwargs)
        self.remember(key, result)
        return result

    def remember(self, key: str, value: Any) -> None:
        if self.ttl is None:
            return
        entry = {"value": value, "cached_at": datetime.now(UTC).isoformat()}
        try:
            payload = json.dumps(entry)
        except (TypeError, ValueError):
            log.warning("result not cached: not JSON", breaker=self.breaker.name)
            return
        self.breaker.client.set(keys.breaker_cache(self.breaker.name, key), payload,
                                px=round(self.ttl * 1000))

    def cached(self, key: str) -> dict[str, Any] | None:
        raw = self.breaker.client.get(keys.breaker_cache(self.breaker.name, key))
        if raw is None:
            return None
        entry: dict[str, Any] = json.loads(raw)
        return entry

    def _answer(self, key: str, exc: Exception, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> dict[str, Any]:
        entry = self.cached(key) if self.ttl is not None else None
        if entry is not None:
            log.info("fallback from cache", breaker=self.breaker.name, reason=str(exc))
            return marked(entry["value"], entry["cached_at"], "cache", exc)
        if self.function is not None and self.functions is not None:
            log.info("fallback function", breaker=self.breaker.name, function=self.function)
            return marked(self.functions.get(self.function)(*args, **kwargs), None, "function",
                          exc)
        raise exc
