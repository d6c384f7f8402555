"""The same task failing with the same exception type is notified once per window.

One Lua script decides and counts in one round trip, so concurrent failures on many
workers never send twice. The next notification after a window carries the count of
the failures that window suppressed.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import redis

from taskworks import keys
from taskworks.errors import InvalidInput

__all__ = ["CARRY_SECONDS", "Deduper", "dedupe_keys"]

#: how long after its window a suppressed count waits for the next failure to report it
CARRY_SECONDS = 86_400


def dedupe_keys(task_name: str, exc_type: str) -> tuple[str, str]:
    """Window marker and suppressed counter of one (task, exception type)."""
    # a digest: names may hold any character; the {hash tag} keeps both keys in one
    # Redis Cluster slot, which a script touching both requires
    digest = hashlib.sha256(f"{task_name}\0{exc_type}".encode()).hexdigest()[:32]
    return f"{keys.NOTIFY}{{{digest}}}:window", f"{keys.NOTIFY}{{{digest}}}:suppressed"


class Deduper:
    def __init__(self, client: redis.Redis, window_seconds: int, *,
                 carry_seconds: int = CARRY_SECONDS) -> None:
        if isinstance(window_seconds, bool) or not isinstance(window_seconds, int) \
                or window_seconds < 1:
            raise InvalidInput("window_seconds", window_seconds, "an integer >= 1")
        self.window_seconds = window_seconds
        self.carry_seconds = carry_seconds
        script = (resources.files("taskworks.notify") / "dedupe.lua").read_text()
        self._admit = client.register_script(script)

    def admit(self, task_name: str, exc_type: str) -> int | None:
        """None: suppressed (counted); an int: notify now, with this many occurrences."""
        occurrences = int(self._admit(
            keys=list(dedupe_keys(task_name, exc_type)),
            args=[self.window_seconds, self.window_seconds + self.carry_seconds],
        ))
        return occurrences or None
