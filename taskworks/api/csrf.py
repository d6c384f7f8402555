"""Cross-site request guard: every request that may change state (any method but GET,
HEAD and OPTIONS, on every route, with or without a token) must show it was not sent by
another site's page. Three checks, in this order; the first that fails is a 403 whose
``detail`` names it:

1. ``Sec-Fetch-Site`` (Fetch Metadata, sent by every current browser) must not be
   ``cross-site`` or ``same-site``. ``same-site`` is refused too: a page on another port
   of the same host (``http://127.0.0.1:9999``) is "same-site" to this server.
2. ``Origin``, when present, must be this server's own (its scheme://host:port, compared
   by host:port with the ``Host`` header, as Jupyter's ``check_origin`` does) or one of
   ``api.trusted_origins``. ``Origin: null`` (sandboxed frames, ``file://``) is refused.
3. ``X-Taskworks: 1`` must be present. This is the guard that does not depend on the
   browser volunteering anything: a page can send a POST to another origin without a
   CORS preflight only as a "simple" request (a form, or ``fetch`` with ``no-cors``, whose
   headers are limited to a safelist), so a custom header forces a preflight, and this
   server answers no preflight (no CORS middleware): the browser never sends the request.
   API clients (curl, httpx, the CLI) add one header; the dashboard's script sends it.

Why not a secret token (Django, starlette-csrf's double-submit cookie)? Those are needed
when the same origin serves forms that post without script; here every write is made by
script or by an API client, so the custom header alone proves same-origin, with no state
to keep, and it holds for bearer clients and for the tokenless loopback server alike.
Content types are not checked: with the header required, a ``text/plain`` or form body
cannot arrive from another site, and uploads need ``text/csv`` and ``multipart``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

HEADER = "X-Taskworks"
HEADER_VALUE = "1"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Sec-Fetch-Site values that say another site's page sent the request
FOREIGN_SITES = frozenset({"cross-site", "same-site"})


def _origin_of(url: str) -> str:
    """``scheme://host[:port]`` lower-cased, or "" when ``url`` is not an origin."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        return ""
    return f"{parts.scheme}://{parts.netloc}".lower()


def refusal(method: str, headers: Headers, trusted: frozenset[str]) -> str | None:
    """Why this request must be refused as possibly cross-site, or None."""
    if method in SAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site")
    if site is not None and site.lower() in FOREIGN_SITES:
        return f"cross-site request refused: Sec-Fetch-Site is {site!r} (another site's page)"
    origin = headers.get("origin")
    if origin is not None:
        given = _origin_of(origin)
        host = headers.get("host", "").lower()
        if not given or (given not in trusted and urlsplit(given).netloc != host):
            return (f"cross-site request refused: Origin {origin!r} is not this server's "
                    f"({host or 'no Host header'}) nor in api.trusted_origins")
    if headers.get(HEADER) != HEADER_VALUE:
        return (f"cross-site request refused: the header '{HEADER}: {HEADER_VALUE}' is "
                f"missing; every {method} needs it (a page on another site cannot send it)")
    return None


class CrossSiteGuard:
    """Pure ASGI middleware (no BaseHTTPMiddleware: nothing is buffered or wrapped for the
    requests it lets through)."""

    def __init__(self, app: ASGIApp, trusted_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.trusted = frozenset(o for o in map(_origin_of, trusted_origins) if o)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            reason = refusal(scope["method"], Headers(scope=scope), self.trusted)
            if reason is not None:
                # the body is never read: nothing of the request reaches a handler
                await JSONResponse({"detail": reason}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def document_header(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the required header to every state-changing operation of an OpenAPI schema, so
    clients generated from it send it and Swagger UI's "Try it out" fills it in."""
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            if method.upper() in SAFE_METHODS or not isinstance(operation, dict):
                continue
            parameters = operation.setdefault("parameters", [])
            if not any(p.get("name") == HEADER for p in parameters):
                parameters.append({
                    "name": HEADER, "in": "header", "required": True,
                    "schema": {"type": "string", "enum": [HEADER_VALUE],
                               "default": HEADER_VALUE},
                    "description": "proves the request is not a cross-site one "
                                   "(docs/security.md)"})
    return schema
