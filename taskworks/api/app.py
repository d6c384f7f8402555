"""``create_app(tw)``: the FastAPI application: REST API, dashboard, /metrics, /docs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi_offline import FastAPIOffline

from taskworks.api import errors
from taskworks.api.auth import docs_need_auth, loopback_only, require_token
from taskworks.api.context import ApiContext
from taskworks.api.csrf import CrossSiteGuard, document_header
from taskworks.api.limits import BodyLimit
from taskworks.api.routes import (
    autoscale,
    breakers,
    datasets,
    dlq,
    health,
    jobs,
    journal,
    metrics,
    periodic,
    queues,
    scheduled,
    tasks,
    workers,
    workflows,
)
from taskworks.broker.urls import redis_client
from taskworks.monitoring.metrics import registry_for

if TYPE_CHECKING:
    from taskworks.app import Taskworks
    from taskworks.settings import ApiSettings

#: every router behind the token
ROUTERS: tuple[APIRouter, ...] = (
    tasks.router, journal.router, dlq.router, queues.router, workers.router,
    autoscale.router, breakers.router, workflows.router, datasets.router, jobs.router,
    metrics.router, scheduled.router, periodic.router,
)
#: where Swagger UI's own files are served (script, style sheet, icon)
DOCS_ASSETS = "/docs/assets"


def create_app(tw: Taskworks, token: str | None = None, *, dashboard: bool = True,
               settings: ApiSettings | None = None) -> FastAPI:
    """The API for ``tw``. ``settings`` default to ``tw.settings.api``, ``token`` to
    theirs; without one nothing is authenticated, so the server must bind loopback only
    (server.py)."""
    settings = settings or tw.settings.api
    if token is None and settings.token is not None:
        token = settings.token.get_secret_value()
    # /docs (Swagger UI) loads its files from this server (fastapi-offline ships them), not
    # from a CDN: it works without internet and runs no third-party script. No /redoc: its
    # script fetches a logo from cdn.redoc.ly on every view, and /docs shows the same schema
    app = FastAPIOffline(
        title="taskworks", version="0.1.0",
        description="Control plane of taskworks: tasks, journal, dead letters, queues, "
                    "workers, breakers, workflows, datasets and map-reduce jobs, "
                    "autoscaling.",
        static_url=DOCS_ASSETS, redoc_url=None,
    )
    client = redis_client(tw.settings.effective_broker_url, socket_timeout=5,
                          socket_connect_timeout=5)
    app.state.context = ApiContext(tw=tw, token=token or None, client=client,
                                   settings=settings)
    app.state.metrics = registry_for(tw.store, client, tw.settings, tw.breakers,
                                     tw.queue_names, tw.app.control.ping)
    errors.install(app)
    # innermost middleware: body caps (docs/security.md), wrapping the receive of every
    # reader of the body, with no BaseHTTPMiddleware between it and the routes
    app.add_middleware(BodyLimit)
    app.middleware("http")(docs_need_auth(dashboard))
    app.middleware("http")(loopback_only(token or None))
    app.add_middleware(CrossSiteGuard, trusted_origins=settings.trusted_origins)
    app.include_router(health.router)  # open: probes carry no token
    for router in ROUTERS:
        app.include_router(router, dependencies=[Depends(require_token)])
    if dashboard:
        from taskworks.web.pages import mount

        mount(app)
    schema = app.openapi

    def openapi() -> dict[str, Any]:
        # FastAPI caches the schema it builds: the header is added to it once
        return app.openapi_schema or document_header(schema())

    app.openapi = openapi  # type: ignore[method-assign]
    return app
