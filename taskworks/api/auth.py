"""Authentication: a bearer token on /api/*, a session cookie for the dashboard.

Without a token the server only binds loopback (server.py) and checks nothing but the
Host header (a web page elsewhere must not reach it by DNS rebinding). With a token:

- an API client sends ``Authorization: Bearer <token>``;
- the dashboard's login page takes the token once and sets an HttpOnly, SameSite=Strict
  cookie holding a random session id (sessions.py): it expires after ``api.session_ttl``
  and logout revokes it server-side; the token itself never sits in the browser;
- /docs and /openapi.json need the one or the other too (``docs_need_auth``).

Whatever the credentials, a request that changes something must also pass the
cross-site guard (csrf.py). Token comparisons use ``hmac.compare_digest``: the time taken
says nothing about the token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import redis
from fastapi import HTTPException, Request, Response, Security, status
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from taskworks import sessions
from taskworks.api.context import ApiContext, get_context

COOKIE = "taskworks_session"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: FastAPI's schema and the Swagger UI page with its files (fastapi-offline's routes)
DOCS_PATHS = ("/openapi.json", "/docs")

bearer = HTTPBearer(auto_error=False, description="TASKWORKS_API_TOKEN")


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode())


def has_session(request: Request, ctx: ApiContext) -> bool:
    """A live dashboard session: opened by /login, not yet expired nor logged out.
    Asks Redis: call it off the event loop."""
    cookie = request.cookies.get(COOKIE)
    return (ctx.token is not None and cookie is not None
            and sessions.is_live(ctx.client, ctx.token, cookie))


def authorized(request: Request, ctx: ApiContext, given: str | None) -> bool:
    """``given``: the bearer token sent, if any (a wrong one is not rescued by a cookie)."""
    if ctx.token is None:
        return True
    if given is not None:
        return token_matches(given, ctx.token)
    return has_session(request, ctx)


def require_token(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(
        bearer)) -> None:
    """The dependency every /api/* route (and /metrics) has."""
    given = credentials.credentials if credentials is not None else None
    if not authorized(request, get_context(request), given):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a valid bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})


def _bearer_of(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def is_docs(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in DOCS_PATHS)


def docs_need_auth(dashboard: bool) -> Callable[
        [Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """Middleware: with a token, /docs and /openapi.json need it or a dashboard session
    (the schema maps every operation; the routes FastAPI adds for them take no
    dependencies, hence a middleware). A browser without a session is sent to /login."""

    async def check(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                    ) -> Response:
        ctx = get_context(request)
        if ctx.token is None or not is_docs(request.url.path):
            return await call_next(request)
        try:
            allowed = await run_in_threadpool(authorized, request, ctx, _bearer_of(request))
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # outside the routes, so errors.py's handlers do not apply: the same 503 here
            return JSONResponse({"detail": f"the broker is unavailable ({type(exc).__name__})"},
                                status_code=503, headers={"Retry-After": "5"})
        if not allowed:
            if dashboard and request.url.path == "/docs" and _bearer_of(request) is None:
                return RedirectResponse("/login", status_code=303)
            return JSONResponse({"detail": "a valid bearer token (or a dashboard session) "
                                           "is required"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    return check


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
