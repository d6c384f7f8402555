"""Dashboard sessions and the login rate limit, kept in Redis so that every API process
sees the same ones and a logout or an expiry holds everywhere at once.

A session is a random id (the cookie's value) and one Redis key named by
HMAC-SHA256(token, id), set with the session's TTL: logout deletes it, expiry drops it,
and a changed token makes every old key unreachable. Redis never holds a cookie that
would work, and the cookie never holds the token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import redis

from taskworks import keys

__all__ = ["MAX_ID_LENGTH", "close_session", "is_live", "login_retry_after", "open_session"]

#: longer cookies are not ours: refused without asking Redis
MAX_ID_LENGTH = 100


def _key(token: str, session_id: str) -> str:
    digest = hmac.new(token.encode(), session_id.encode("utf-8", "replace"), hashlib.sha256)
    return keys.api_session(digest.hexdigest())


def open_session(client: redis.Redis, token: str, ttl: int) -> str:
    """A new session lasting ``ttl`` seconds; returns its id (the cookie's value)."""
    session_id = secrets.token_urlsafe(32)
    client.set(_key(token, session_id), 1, ex=ttl)
    return session_id


def is_live(client: redis.Redis, token: str, session_id: str) -> bool:
    if not session_id or len(session_id) > MAX_ID_LENGTH:
        return False
    return bool(client.exists(_key(token, session_id)))


def close_session(client: redis.Redis, token: str, session_id: str) -> None:
    if session_id and len(session_id) <= MAX_ID_LENGTH:
        client.delete(_key(token, session_id))


def login_retry_after(client: redis.Redis, address: str, attempts: int,
                      window: int) -> int | None:
    """Count one login attempt from ``address``: None while at most ``attempts`` were made
    in the current ``window`` seconds, else the seconds until the window ends.

    Every attempt counts, right or wrong, before the token is even compared: a burst of
    parallel guesses cannot slip past a check made before the count. One round trip, in
    a MULTI: the window starts with the first attempt (SET NX EX) and the count follows."""
    key = keys.api_login_attempts(address)
    with client.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=window, nx=True)
        pipe.incr(key)
        pipe.ttl(key)
        _, count, ttl = pipe.execute()
    if int(count) <= attempts:
        return None
    return max(int(ttl), 1)
