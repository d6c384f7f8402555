"""A real uvicorn server running ``create_app(tw)`` in a thread, on a free port."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from taskworks.api.server import make_server
from taskworks.settings import ApiSettings
from tests.support.postgres import free_port
from tests.support.wait import wait_for

TOKEN = "test-token-0123456789abcdef"
#: what every API client sends on a write (taskworks/api/csrf.py)
GUARD = {"X-Taskworks": "1"}


class ApiServer:
    def __init__(self, tw: Any, token: str | None = None, **settings: Any) -> None:
        """``settings``: ``api`` settings to change (session_ttl=2, login_attempts=3...)."""
        self.port = free_port()
        self.token = token
        self.url = f"http://127.0.0.1:{self.port}"
        api = tw.settings.api.model_copy(update=settings) if settings else None
        assert api is None or isinstance(api, ApiSettings)
        self.server = make_server(tw, "127.0.0.1", self.port, token=token, settings=api)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ApiServer:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=15, what="the API server to start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def client(self, token: str | None = "default", *, guard: bool = True) -> httpx.Client:
        """An HTTP client; with the server's token unless another (or None) is given, and
        the cross-site guard's header unless ``guard`` is false."""
        chosen = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {chosen}"} if chosen else {}
        return httpx.Client(base_url=self.url, headers={**headers, **(GUARD if guard else {})},
                            timeout=30)
