"""``taskworks api``: the REST API, dashboard and /metrics in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

from taskworks.cli import loader
from taskworks.cli.common import AppOption, out, settings


def api(
    host: Annotated[str | None, typer.Option(help="address to bind (settings api.host, "
                                             "default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="settings api.port, "
                                             "default 8765")] = None,
    app: AppOption = None,
) -> None:
    """Serve the REST API, the dashboard and /metrics. Any address but loopback needs
    TASKWORKS_API_TOKEN."""
    from taskworks.api.server import make_server

    loaded = settings()
    tw = loader.load(app)
    server = make_server(tw, host, port, log_level=loaded.log_level.lower())
    bound_host, bound_port = server.config.host, server.config.port
    auth = "bearer token required" if tw.settings.api.token else "no token: loopback only"
    out.print(f"taskworks api on http://{bound_host}:{bound_port} ({auth}); "
              f"dashboard /, docs /docs, metrics /metrics", markup=False)
    server.run()
