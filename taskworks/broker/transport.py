"""Kombu's Redis transport with one Redis client object per channel instead of one per call.

Kombu's Redis channel builds a new ``redis.Redis`` for every unacked-index write,
acknowledgement and publish (``Channel.conn_or_acquire``). The client is only a handle on
the channel's connection pool, but building one copies redis-py's table of response
callbacks: in a prefork worker draining no-op tasks that was a tenth of its CPU
(docs/benchmarks.md, issue 9). A ``redis.Redis`` is thread-safe (every command checks a
connection out of the pool and returns it), so the channel keeps one and hands it out.
Commands, keys and their order are unchanged: only the Python object is reused.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis

#: the URL schemes kombu serves with its Redis transport (the ones this class replaces)
SCHEMES = ("redis", "rediss")


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    _shared_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            # first use, or the channel replaced its pool: a client on the current one
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    Channel = Channel


#: by name, not the class: the name is what ``Connection.info()`` reports, and the
#: worker's ``inspect stats`` reply must stay JSON (a class in it fails to encode)
TRANSPORT = f"{__name__}:Transport"


def transport_for(broker_url: str) -> str | None:
    """This transport for a redis:// or rediss:// broker; None (kombu's choice) otherwise."""
    scheme = broker_url.split("://", 1)[0].lower() if "://" in broker_url else ""
    return TRANSPORT if scheme in SCHEMES else None
