"""Hide secrets in task arguments and configuration before they are journaled or printed."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"
DEFAULT_SECRET_KEYS = ("password", "passwd", "token", "secret", "api_key", "apikey",
                       "authorization", "credential", "private_key")


class Redactor:
    """Replaces the values of keys that look secret, at any depth of dicts and lists."""

    def __init__(self, words: Iterable[str] = DEFAULT_SECRET_KEYS) -> None:
        words = list(words)
        self._pattern = re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE) \
            if words else None

    def is_secret(self, key: object) -> bool:
        return self._pattern is not None and isinstance(key, str) \
            and self._pattern.search(key) is not None

    def __call__(self, value: Any) -> Any:
        if self._pattern is None:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: MASK if self.is_secret(k) and v is not None else self._walk(v)
                    for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._walk(v) for v in value]
        return value
