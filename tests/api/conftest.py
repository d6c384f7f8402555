"""The API under test: a real uvicorn server (thread) over the sample app, a real
embedded Valkey and the session's SQLite store; tasks run in real worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.server import TOKEN, ApiServer


@pytest.fixture
def api_server(tw: Any) -> Iterator[ApiServer]:
    server = ApiServer(tw, token=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def api(api_server: ApiServer) -> Iterator[httpx.Client]:
    with api_server.client() as client:
        yield client
