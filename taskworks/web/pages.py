"""Dashboard pages. Each page is a server-rendered shell; static/app.js fills it from the
API and keeps it live by polling. Everything shown is escaped: Jinja2 autoescapes, and
the script only ever sets ``textContent`` and attributes, never HTML."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from starlette.concurrency import run_in_threadpool

from taskworks.api.auth import COOKIE, has_session, token_matches
from taskworks.api.context import ApiContext, get_context
from taskworks.api.models import ID_PATTERN
from taskworks.errors import InvalidInput
from taskworks.runtime.journal.states import JournalState
from taskworks.sessions import close_session, login_retry_after, open_session

__all__ = ["HERE", "PAGES", "autoscale", "breakers", "datasets", "dead_letters", "job", "jobs",
           "journal", "login", "login_form", "logout", "mount", "overview", "router", "run",
           "scheduled", "templates", "workflows"]

HERE = Path(__file__).parent
templates = Jinja2Templates(env=Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=True))

router = APIRouter(include_in_schema=False)

PAGES = {"overview": "/", "runs": "/workflows", "jobs": "/jobs", "datasets": "/datasets",
         "journal": "/journal", "scheduled": "/scheduled", "dead letters": "/dlq",
         "breakers": "/breakers", "autoscale": "/autoscale"}


def _logged_in(request: Request) -> bool:
    ctx = get_context(request)
    return ctx.token is None or has_session(request, ctx)


def _page(request: Request, template: str, **values: Any) -> Response:
    if not _logged_in(request):
        return RedirectResponse("/login", status_code=303)
    return templates.TemplateResponse(request, template, {
        "pages": PAGES, "auth": get_context(request).token is not None, **values})


@router.get("/", response_class=HTMLResponse)
def overview(request: Request) -> Response:
    return _page(request, "overview.html", page="overview")


@router.get("/journal", response_class=HTMLResponse)
def journal(request: Request) -> Response:
    return _page(request, "journal.html", page="journal",
                 states=[state.value for state in JournalState])


@router.get("/dlq", response_class=HTMLResponse)
def dead_letters(request: Request) -> Response:
    return _page(request, "dlq.html", page="dead letters")


@router.get("/scheduled", response_class=HTMLResponse)
def scheduled(request: Request) -> Response:
    return _page(request, "scheduled.html", page="scheduled")


@router.get("/breakers", response_class=HTMLResponse)
def breakers(request: Request) -> Response:
    return _page(request, "breakers.html", page="breakers")


@router.get("/autoscale", response_class=HTMLResponse)
def autoscale(request: Request) -> Response:
    return _page(request, "autoscale.html", page="autoscale")


@router.get("/workflows", response_class=HTMLResponse)
def workflows(request: Request) -> Response:
    return _page(request, "workflows.html", page="runs")


def _detail(request: Request, page: str, what: str, value: str,
            lookup: Callable[[ApiContext], Any], template: str,
            fields: Callable[[Any], dict[str, Any]]) -> Response:
    """A page about one run or job: login first, a 404 page for an unknown id."""
    ctx: ApiContext = get_context(request)
    if not _logged_in(request):
        return RedirectResponse("/login", status_code=303)
    try:
        status = lookup(ctx)
    except InvalidInput:
        return templates.TemplateResponse(request, "missing.html", {
            "pages": PAGES, "page": page, "what": what, "value": value,
            "auth": ctx.token is not None}, status_code=404)
    return _page(request, template, page=page, **fields(status))


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run(request: Request, run_id: Annotated[str, PathParam(pattern=ID_PATTERN)]) -> Response:
    return _detail(request, "runs", "run", run_id, lambda ctx: ctx.tw.workflows.status(run_id),
                   "run.html", lambda status: {"run_id": run_id, "workflow": status.workflow,
                                               "version": status.version})


@router.get("/jobs", response_class=HTMLResponse)
def jobs(request: Request) -> Response:
    return _page(request, "jobs.html", page="jobs")


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job(request: Request, job_id: Annotated[str, PathParam(pattern=ID_PATTERN)]) -> Response:
    return _detail(request, "jobs", "job", job_id, lambda ctx: ctx.tw.jobs.status(job_id),
                   "job.html", lambda status: {"job_id": job_id, "dataset": status.dataset,
                                               "function": status.function})


@router.get("/datasets", response_class=HTMLResponse)
def datasets(request: Request) -> Response:
    return _page(request, "datasets.html", page="datasets")


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    if get_context(request).token is None:
        return RedirectResponse("/", status_code=303)
    return templates.TemplateResponse(request, "login.html", {})


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """The login form's script posts here (with the cross-site guard's header, like every
    write): 303 to / with a new session's cookie; a wrong token or too many attempts is
    a JSON ``detail`` the script shows."""
    ctx = get_context(request)
    token = ctx.token
    if token is None:
        return RedirectResponse("/", status_code=303)
    settings = ctx.settings
    # counted before the token is compared, per client address: uvicorn runs with
    # proxy_headers off, so this is the peer's address, which a client cannot forge
    address = request.client.host if request.client else "unknown"
    wait = await run_in_threadpool(login_retry_after, ctx.client, address,
                                   settings.login_attempts, settings.login_window)
    if wait is not None:
        return JSONResponse({"detail": f"too many login attempts; try again in {wait} s"},
                            status_code=429, headers={"Retry-After": str(wait)})
    # a form of one field: parsed here rather than adding python-multipart
    form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
    given = (form.get("token") or [""])[0]
    if not token_matches(given, token):
        return JSONResponse({"detail": "That token is not valid."}, status_code=401)
    session_id = await run_in_threadpool(open_session, ctx.client, token,
                                         settings.session_ttl)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", max_age=settings.session_ttl)
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    """Ends the session server-side: its cookie, kept or copied, no longer works."""
    ctx = get_context(request)
    cookie = request.cookies.get(COOKIE)
    if ctx.token is not None and cookie:
        close_session(ctx.client, ctx.token, cookie)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, httponly=True, samesite="strict")
    return response


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
