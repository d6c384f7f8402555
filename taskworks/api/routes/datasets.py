"""/api/datasets: import a CSV or JSONL upload, list, show (with the first items), delete.

An upload is the request body itself (``Content-Type: text/csv`` or
``application/x-ndjson``, or ``?format=``) or a ``multipart/form-data`` form with a
``file`` field. Either way it is spooled to a temporary file and imported by
``Datasets.import_file``: streamed in chunks, all or nothing, bad rows reported with their
line numbers (a 422 that lists them; nothing is stored).

The body is capped at ``MAX_UPLOAD_BYTES`` while it streams, however it is sent, by the
app's ``BodyLimit`` middleware (taskworks/api/limits.py): past the cap the reading below
fails and the answer is a 413, so neither the form parser's spool nor ours grows beyond it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import IO, Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from taskworks.api.context import ApiContext, Ctx
from taskworks.api.errors import NotFound, invalid_input_body
from taskworks.api.models import DatasetDeleted, DatasetDetail, DatasetItemModel, DatasetModel
from taskworks.errors import BadRows, InvalidInput, RowRefused
from taskworks.mapreduce.datasets import MAX_NAME_LENGTH, DatasetInfo, Datasets

router = APIRouter(prefix="/api/datasets", tags=["datasets"])

#: an upload larger than this is a 413 (taskworks/api/limits.py reads it per request); it
#: bounds the temporary files an upload is spooled to before the import
MAX_UPLOAD_BYTES = 1 << 30
MAX_HEAD = 100
#: what the library accepts as a new dataset's name (Datasets refuses the rest), for the
#: schema: no control characters
NAME_PATTERN = rf"^[^\x00-\x1f\x7f]{{1,{MAX_NAME_LENGTH}}}$"
_CONTENT_TYPES = {"text/csv": "csv", "application/csv": "csv",
                  "application/x-ndjson": "jsonl", "application/jsonl": "jsonl",
                  "application/x-jsonlines": "jsonl", "application/jsonlines": "jsonl"}
_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

Format = Literal["csv", "jsonl"]
NameQ = Annotated[str | None, Query(pattern=NAME_PATTERN,
                                    description="the new dataset's name (or a form field)")]
FormatQ = Annotated[Format | None, Query(description="default: from the file name or the "
                                                     "Content-Type")]
DatasetName = Annotated[str, PathParam(min_length=1, max_length=255)]

UPLOAD_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}},
    "application/x-ndjson": {"schema": {"type": "string"}},
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary"},
                       "name": {"type": "string"},
                       "format": {"type": "string", "enum": ["csv", "jsonl"]}}}},
}}}


def datasets_of(ctx: ApiContext) -> Datasets:
    return ctx.tw.jobs.datasets


def _model(info: DatasetInfo) -> DatasetModel:
    return DatasetModel(name=info.name, source=info.source, origin=info.origin,
                        state=info.state, row_count=info.row_count, columns=info.columns,
                        created_at=info.created_at)


def _info(ctx: ApiContext, name: str) -> DatasetInfo:
    try:
        return datasets_of(ctx).get(name)
    except InvalidInput:
        raise NotFound("dataset", name) from None


def _bad_rows(exc: BadRows, filename: str) -> JSONResponse:
    body = invalid_input_body(InvalidInput(
        "file", filename, f"only well-formed rows; {exc.total} bad row(s), nothing was "
        "imported"))
    body["detail"][0]["bad_rows"] = [{"line": r.line, "message": r.message}
                                     for r in exc.bad_rows]
    body["detail"][0]["bad_rows_total"] = exc.total
    return JSONResponse(body, status_code=422)


def _refused_row(exc: RowRefused, filename: str) -> JSONResponse:
    """A row over the readers' limits: the message names its line and field, and so do
    ``line`` and ``column``; ``field`` is the request's, the file."""
    body = invalid_input_body(exc)
    body["detail"][0].update(type="row_refused", loc=["file"], field="file", file=filename,
                             line=exc.line, column=exc.column)
    return JSONResponse(body, status_code=422)


def _format(given: str | None, filename: str | None, content_type: str) -> Format:
    if given is not None:
        if given not in ("csv", "jsonl"):
            raise InvalidInput("format", given, "csv or jsonl")
        return "csv" if given == "csv" else "jsonl"
    suffix = Path(filename or "").suffix.lower()
    found = _SUFFIXES.get(suffix) or _CONTENT_TYPES.get(content_type)
    if found is None:
        raise InvalidInput("format", content_type or suffix or None,
                           "?format=csv|jsonl, a file name ending in .csv, .jsonl or .ndjson, "
                           "or Content-Type text/csv or application/x-ndjson")
    return "csv" if found == "csv" else "jsonl"


async def _spool_body(request: Request, out: IO[bytes]) -> None:
    async for chunk in request.stream():  # capped by BodyLimit as it streams
        out.write(chunk)


async def _spool_form(request: Request, out: IO[bytes]) -> tuple[str | None, str | None,
                                                                 str | None]:
    """Copies the form's ``file`` to ``out``; returns its name and the form's name and
    format fields."""
    try:
        form = await request.form(max_files=1, max_fields=10)
    except (MultiPartException, StarletteHTTPException, ValueError) as exc:
        raise InvalidInput("body", request.headers.get("content-type"),
                           f"a multipart/form-data body with a file field ({exc})") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidInput("file", None if upload is None else "a text field",
                           "a file field holding the CSV or JSONL data")
    await run_in_threadpool(shutil.copyfileobj, upload.file, out)
    fields = {key: form.get(key) for key in ("name", "format")}
    name, fmt = (v if isinstance(v, str) else None for v in fields.values())
    return upload.filename, name, fmt


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetDetail,
             openapi_extra=UPLOAD_BODY,
             responses={422: {"description": "bad input; bad rows are listed with their "
                                             "line numbers in detail[0].bad_rows"},
                        413: {"description": "a body over the upload cap"}})
async def import_dataset(request: Request, ctx: Ctx, name: NameQ = None,
                         format: FormatQ = None, infer_types: Annotated[bool, Query(
                             description="CSV cells as numbers where they are")] = True
                         ) -> Any:
    """Import an upload as a new dataset, all or nothing."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    with tempfile.TemporaryDirectory(prefix="taskworks-upload-") as directory:
        path = Path(directory) / "upload"
        filename: str | None = None
        given: str | None = format
        with path.open("wb") as out:
            if content_type == "multipart/form-data":
                filename, form_name, form_format = await _spool_form(request, out)
                name = name or form_name
                given = given or form_format
            else:
                await _spool_body(request, out)
        fmt = _format(given, filename, content_type)
        if not name:  # what a name may hold is the library's to say
            raise InvalidInput("name", name, "a dataset name: ?name= or a name form field")
        label = filename or "the request body"
        try:
            # the spooled file's path means nothing once it is gone: name the upload
            info = await run_in_threadpool(datasets_of(ctx).import_file, path, name,
                                           fmt=fmt, infer_types=infer_types,
                                           origin=f"upload: {label}")
        except BadRows as exc:
            return _bad_rows(exc, label)
        except RowRefused as exc:
            return _refused_row(exc, label)
    return await run_in_threadpool(show, info.name, ctx)


@router.get("", response_model=list[DatasetModel])
def datasets(ctx: Ctx) -> list[DatasetModel]:
    """Every dataset, by name."""
    return [_model(info) for info in datasets_of(ctx).all()]


@router.get("/{name:path}", response_model=DatasetDetail)
def show(name: DatasetName, ctx: Ctx,
         head: Annotated[int, Query(ge=0, le=MAX_HEAD, description="items to include")] = 5
         ) -> DatasetDetail:
    """One dataset and its first items."""
    info = _info(ctx, name)
    try:
        items = datasets_of(ctx).head(name, head)
    except InvalidInput:  # deleted meanwhile
        raise NotFound("dataset", name) from None
    return DatasetDetail(**_model(info).model_dump(),
                         head=[DatasetItemModel(**item) for item in items])


@router.delete("/{name:path}", response_model=DatasetDeleted)
def delete(name: DatasetName, ctx: Ctx) -> DatasetDeleted:
    """Delete a dataset and its items; refused (422) while a running job reads or writes
    it."""
    try:
        removed = datasets_of(ctx).delete(name)
    except InvalidInput as exc:
        if exc.field == "dataset":  # no dataset of that name
            raise NotFound("dataset", name) from None
        raise
    return DatasetDeleted(name=name, deleted_items=removed)

