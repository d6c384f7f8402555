"""A real uvicorn server running ``create_app(tw)`` in a thread, on a free port."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from taskworks.api.server import make_server
from tests.support.postgres import free_port
from tests.support.wait import wait_for

TOKEN = "test-token-0123456789abcdef"


class ApiServer:
    def __init__(self, tw: Any, token: str | None = None) -> None:
        self.port = free_port()
        self.token = token
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = make_server(tw, "127.0.0.1", self.port, token=token)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ApiServer:
        self.thread.start()
        wait_for(lambda: self.server.started, timeout=15, what="the API server to start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def client(self, token: str | None = "default") -> httpx.Client:
        """An HTTP client; with the server's token unless another (or None) is given."""
        chosen = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {chosen}"} if chosen else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)
