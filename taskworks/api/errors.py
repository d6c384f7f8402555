"""Errors as HTTP: bad input is a 422 naming the field, an unknown id a 404, never a 500;
a store whose schema is behind (``taskworks db upgrade`` not run) a 503 saying so.

taskworks raises ``InvalidInput(field, value, expected)`` for bad input; the handler turns
it into the same shape FastAPI uses for its own validation errors, with ``field``,
``value`` and ``expected`` added, so a client handles one format.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from fastapi import FastAPI, HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as KombuOperationalError
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError
from starlette.concurrency import run_in_threadpool

from taskworks.api.context import get_context
from taskworks.errors import InvalidInput, NotSubmittable, StoreNotMigrated, WorkflowInvalid
from taskworks.store.schema_check import not_migrated


class NotFound(HTTPException):
    def __init__(self, what: str, value: object) -> None:
        super().__init__(status.HTTP_404_NOT_FOUND, f"no {what} {value!r}")


def _plain(value: Any) -> Any:
    """The value if it is JSON, else its repr: an error body must always serialise."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def invalid_input_body(exc: InvalidInput) -> dict[str, Any]:
    entry = {"type": "invalid_input", "loc": [exc.field], "field": exc.field,
             "value": _plain(exc.value), "expected": exc.expected, "msg": str(exc)}
    if isinstance(exc, WorkflowInvalid):
        entry["errors"] = exc.errors  # every problem of the definition, each located
    return {"detail": [entry]}


async def _invalid_input(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidInput)
    return JSONResponse(invalid_input_body(exc), status_code=422)


async def _not_submittable(request: Request, exc: Exception) -> JSONResponse:
    # not a malformed request but a refusal: 403, in the shape of the 422s
    assert isinstance(exc, NotSubmittable)
    body = invalid_input_body(exc)
    body["detail"][0].update(type="not_submittable", setting=exc.setting)
    return JSONResponse(body, status_code=403)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ())]
        # "body"/"query"/"path" say where; the field is what follows
        field = ".".join(loc[1:]) if len(loc) > 1 else ".".join(loc)
        entry = {k: v for k, v in error.items() if k in ("type", "loc", "msg", "input")}
        detail.append({**entry, "field": field or "body"})
    return JSONResponse(jsonable_encoder({"detail": detail}, custom_encoder={
        bytes: lambda b: b.decode("utf-8", "replace")}), status_code=422)


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    # the broker or the store is down: the client may retry, it did nothing wrong
    where = "store" if isinstance(exc, SQLAlchemyOperationalError) else "broker"
    return JSONResponse({"detail": f"the {where} is unavailable ({type(exc).__name__})"},
                        status_code=503, headers={"Retry-After": "5"})


async def _not_migrated(request: Request, exc: Exception) -> JSONResponse:
    # no Retry-After: only an operator running `taskworks db upgrade` makes it go away
    return JSONResponse({"detail": str(exc)}, status_code=503)


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    """SQLite says "no such table" with an OperationalError, PostgreSQL "relation does not
    exist" with a ProgrammingError: either may mean the schema is behind. The revision is
    read only now, on the error path, off the event loop."""
    assert isinstance(exc, DBAPIError)
    translated = await run_in_threadpool(not_migrated, get_context(request).tw.store, exc)
    if translated is not None:
        return await _not_migrated(request, translated)
    if isinstance(exc, SQLAlchemyOperationalError):
        return await _unavailable(request, exc)
    raise exc  # any other ProgrammingError is a bug: the server's 500, as without this handler


def install(app: FastAPI) -> None:
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.add_exception_handler(NotSubmittable, _not_submittable)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StoreNotMigrated, _not_migrated)
    for store_error in (SQLAlchemyOperationalError, ProgrammingError):
        app.add_exception_handler(store_error, _store_error)
    for unavailable in (redis.ConnectionError, redis.TimeoutError, KombuOperationalError):
        app.add_exception_handler(unavailable, _unavailable)
