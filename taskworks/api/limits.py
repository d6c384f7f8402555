"""Request body caps, enforced while the body streams in, before any handler reads it.

Every route has a cap (``route_limit``): a dataset upload ``MAX_UPLOAD_BYTES``, a workflow
definition ``MAX_DEFINITION_BYTES``, anything else ``MAX_BODY_BYTES``. A declared
``Content-Length`` over it is a 413 at once, the body unread. A body without one (chunked,
raw or multipart) is counted as ``receive`` hands it over: the message that passes the
cap raises ``BodyTooLarge`` inside whatever is reading (Starlette's multipart parser, a
route spooling the upload), so nothing past the cap is ever buffered, spooled or parsed,
and the request ends in a 413 whatever the reader made of the exception (a route that
turns it into a 422, FastAPI's 400 "error parsing the body" or a 500 is replaced).

A pure ASGI middleware, not ``BaseHTTPMiddleware``: it must wrap ``receive``. Uvicorn
reads and discards the rest of a refused body after the answer, closing the connection
after its keep-alive timeout, so the client gets the 413 rather than a reset.

Not Starlette's ``RequestBodyLimitMiddleware`` (nor FastAPI's ``max_body_size``, built on
it): its refusal is an ``HTTPException``, which readers that catch those for malformed
bodies (the upload route did) turn into another answer; its 413 is plain text, not the
API's error shape; and one app-wide limit does not fit an upload and a JSON body both.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskworks.api.errors import invalid_input_body
from taskworks.api.routes import datasets, workflows
from taskworks.errors import InvalidInput

#: any body but an upload or a definition: JSON bodies are a few kilobytes
MAX_BODY_BYTES = 1 << 20


def route_limit(method: str, path: str) -> int:
    """The cap for a request. The routes' constants are read per request, not copied here,
    so each route keeps its own limit (tests shrink the upload cap)."""
    route = (method, path.rstrip("/"))
    if route == ("POST", "/api/datasets"):
        return datasets.MAX_UPLOAD_BYTES
    if route == ("POST", "/api/workflows"):
        return workflows.MAX_DEFINITION_BYTES
    return MAX_BODY_BYTES


class BodyTooLarge(Exception):
    """Raised from ``receive`` when the body passes its cap. Not a ValueError nor an
    HTTPException, so that readers which catch those for malformed bodies let it pass."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")


def too_large(method: str, path: str, size: str, limit: int) -> JSONResponse:
    """The 413, in the shape of the API's other input errors."""
    body = invalid_input_body(InvalidInput(
        "body", size, f"at most {limit:,} bytes for {method} {path}"))
    body["detail"][0].update(type="body_too_large", limit=limit)
    return JSONResponse(body, status_code=413)


class BodyLimit:
    def __init__(self, app: ASGIApp,
                 limit_for: Callable[[str, str], int] = route_limit) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        limit = self.limit_for(method, path)
        declared = Headers(scope=scope).get("content-length", "")
        # h11 has already refused a Content-Length that is not one plain number
        if declared.isdigit() and int(declared) > limit:
            await too_large(method, path, f"{int(declared):,} bytes (Content-Length)",
                            limit)(scope, receive, send)
            return
        received = 0
        exceeded = started = False

        async def capped_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:  # a reader that swallowed the first refusal gets it again
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:  # whatever the app made of the refusal: a 413
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await too_large(method, path, f"more than {limit:,} bytes",
                            limit)(scope, receive, send)
