"""Serving the API with uvicorn: the bind rule, a server object, ``serve``.

The rule: without a token the server binds loopback only; any other address needs
``TASKWORKS_API_TOKEN`` (settings ``api.token``) or it refuses to start.

``taskworks up`` runs it in a thread::

    server = make_server(tw, host, port)   # checks the bind rule, raises ConfigError
    thread = threading.Thread(target=server.run, daemon=True); thread.start()
    ...
    server.should_exit = True; thread.join()
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

import uvicorn

from taskworks.errors import ConfigError

if TYPE_CHECKING:
    from taskworks.app import Taskworks
    from taskworks.settings import ApiSettings

MIN_TOKEN_LENGTH = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname: it may resolve to anything


def check_bind(host: str, token: str | None) -> None:
    """Raise ConfigError when ``host`` is not loopback and there is no usable token.
    Messages never include the token."""
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(f"api.token: expected at least {MIN_TOKEN_LENGTH} characters "
                          "(TASKWORKS_API_TOKEN)")
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"api.host: refusing to bind {host!r} without a token: set TASKWORKS_API_TOKEN "
            "(at least 16 characters) or bind 127.0.0.1")


def make_server(tw: Taskworks, host: str | None = None, port: int | None = None,
                token: str | None = None, log_level: str = "warning",
                settings: ApiSettings | None = None) -> uvicorn.Server:
    """A uvicorn.Server for ``tw`` (not started). Host, port and token default to the
    ``api`` settings (``settings``, else ``tw.settings.api``). Run it with
    ``server.run()`` (blocks; fine in a thread: uvicorn only installs signal handlers in
    the main thread); stop it with ``should_exit = True``."""
    from taskworks.api.app import create_app

    settings = settings or tw.settings.api
    host = host or settings.host
    port = port or settings.port
    if token is None and settings.token is not None:
        token = settings.token.get_secret_value()
    check_bind(host, token or None)
    config = uvicorn.Config(create_app(tw, token, settings=settings), host=host, port=port,
                            log_level=log_level, access_log=False, server_header=False,
                            proxy_headers=False)
    return uvicorn.Server(config)


def serve(tw: Taskworks, host: str | None = None, port: int | None = None) -> None:
    """Run the API until interrupted (``taskworks api``)."""
    make_server(tw, host, port, log_level="info").run()
