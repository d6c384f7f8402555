"""Authentication: a bearer token on /api/*, a session cookie for the dashboard.

Without a token the server only binds loopback (server.py) and checks nothing but the
Host header (a web page elsewhere must not reach it by DNS rebinding). With a token:

- an API client sends ``Authorization: Bearer <token>``;
- the dashboard's login page takes the token once and sets an HttpOnly, SameSite=Strict
  cookie holding an HMAC of it (the token itself never sits in the browser); requests
  that change something with the cookie must also carry ``X-Taskworks: 1``, a header a
  cross-site form cannot send (a second guard against CSRF after SameSite).

Every comparison is ``hmac.compare_digest``: the time taken says nothing about the token.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from fastapi import HTTPException, Request, Response, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from taskworks.api.context import get_context

COOKIE = "taskworks_session"
CSRF_HEADER = "x-taskworks"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

bearer = HTTPBearer(auto_error=False, description="TASKWORKS_API_TOKEN")


def session_value(token: str) -> str:
    """The cookie's value: proves the token was given without being the token."""
    return hmac.new(token.encode(), b"taskworks-dashboard-session", hashlib.sha256).hexdigest()


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode())


def has_session(request: Request, token: str) -> bool:
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and hmac.compare_digest(
        cookie.encode("utf-8", "replace"), session_value(token).encode())


def authorized(request: Request, token: str | None,
               credentials: HTTPAuthorizationCredentials | None) -> bool:
    if token is None:
        return True
    if credentials is not None:
        return token_matches(credentials.credentials, token)
    if has_session(request, token):
        return request.method in SAFE_METHODS or request.headers.get(CSRF_HEADER) == "1"
    return False


def require_token(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(
        bearer)) -> None:
    """The dependency every /api/* route (and /metrics) has."""
    if not authorized(request, get_context(request).token, credentials):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})


def host_of(header: str) -> str:
    if header.startswith("["):  # [::1]:8765
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def loopback_only(token: str | None) -> Callable[
        [Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """Middleware: without a token, refuse a Host header that is not loopback."""

    async def check(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                    ) -> Response:
        if token is None and host_of(request.headers.get("host", "")) not in LOOPBACK_HOSTS:
            return Response("this server answers loopback hosts only (no token is set)",
                            status_code=400, media_type="text/plain")
        return await call_next(request)

    return check
