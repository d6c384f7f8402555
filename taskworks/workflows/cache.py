"""Process-local LRU caches bounded by entries and by bytes.

A map-reduce job stores a workflow definition of its own (up to ~1.4 MB of JSON; a
hand-written one may be larger), so a cache bounded by entries alone could hold
gigabytes. The size of a value is its JSON length, measured by the caller: a proxy for
its memory (a parsed definition takes a few times more), cheap and the same everywhere.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

#: bytes (JSON) of definitions each of a process's definition caches holds at most
DEFINITIONS_MAX_BYTES = 64 * 2**20
#: bytes (JSON) of run inputs a process caches at most
RUN_INPUTS_MAX_BYTES = 16 * 2**20

__all__ = ["DEFINITIONS_MAX_BYTES", "RUN_INPUTS_MAX_BYTES", "SizedLRU", "json_size", "keep"]


def keep(cache: dict[K, V], key: K, value: V, bound: int) -> V:
    """Put ``value`` in a process-local cache of at most about ``bound`` entries: a bound,
    not an LRU (emptied when full), since a miss costs one SELECT."""
    if len(cache) > bound:
        cache.clear()
    cache[key] = value
    return value


def json_size(value: Any) -> int:
    """Length of ``value`` as compact JSON (what the store holds of it)."""
    return len(json.dumps(value, separators=(",", ":"), default=str))


class SizedLRU(Generic[K, V]):
    """At most ``max_entries`` values totalling at most ``max_bytes``; the least recently
    used go first. A value larger than ``max_bytes`` is not kept (a miss costs a SELECT).
    Thread-safe: a threads pool's tasks share it."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.nbytes = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            self._items.move_to_end(key)
            return found[0]

    def put(self, key: K, value: V, size: int) -> V:
        """Keep ``value`` (``size`` bytes), evicting the least recently used to fit."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= old[1]
            if size > self.max_bytes:
                return value
            while self._items and (len(self._items) >= self.max_entries
                                   or self.nbytes + size > self.max_bytes):
                _, (_, dropped) = self._items.popitem(last=False)
                self.nbytes -= dropped
            self._items[key] = (value, size)
            self.nbytes += size
            return value
