"""Authentication: bearer token, dashboard session cookie, and the bind rule."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from taskworks.api.auth import COOKIE
from taskworks.api.server import check_bind, make_server
from taskworks.errors import ConfigError
from tests.api.server import GUARD, TOKEN, ApiServer
from tests.support.workers import ROOT


def test_no_token_is_401(api_server: ApiServer) -> None:
    with api_server.client(token=None) as anonymous:
        for path in ("/api/queues", "/api/journal", "/api/dlq", "/api/breakers", "/metrics"):
            response = anonymous.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
        assert anonymous.post("/api/tasks", json={"name": "tests.echo"}).status_code == 401


def test_wrong_token_is_401_and_the_right_one_works(api_server: ApiServer) -> None:
    with api_server.client(token=TOKEN + "x") as wrong:
        assert wrong.get("/api/queues").status_code == 401
    with api_server.client(token=TOKEN[:-1]) as short:
        assert short.get("/api/queues").status_code == 401
    with httpx.Client(base_url=api_server.url, headers={"Authorization": TOKEN}) as no_scheme:
        assert no_scheme.get("/api/queues").status_code == 401
    with api_server.client() as right:
        assert right.get("/api/queues").status_code == 200


def test_dashboard_login_sets_a_session_cookie(api_server: ApiServer) -> None:
    with httpx.Client(base_url=api_server.url, headers=GUARD) as browser:
        assert browser.get("/").status_code == 303  # to the login page
        assert browser.get("/login").status_code == 200
        wrong = browser.post("/login", data={"token": "not the token"})
        assert wrong.status_code == 401
        assert COOKIE not in browser.cookies
        assert "not valid" in wrong.json()["detail"]
        right = browser.post("/login", data={"token": TOKEN})
        assert right.status_code == 303
        session = browser.cookies[COOKIE]
        assert TOKEN not in session  # a random session id, not the token
        assert "httponly" in right.headers["set-cookie"].lower()
        assert "samesite=strict" in right.headers["set-cookie"].lower()
        assert browser.get("/").status_code == 200
        assert browser.get("/api/queues").status_code == 200
        # changing something with the cookie needs the header a cross-site form cannot send
        body = {"name": "no.such.task"}
        assert browser.post("/api/tasks", json=body,
                            headers={"X-Taskworks": ""}).status_code == 403
        assert browser.post("/api/tasks", json=body).status_code == 422
        browser.post("/logout")
        assert browser.get("/api/queues").status_code == 401


def test_without_a_token_only_loopback_hosts_are_answered(tw: Any) -> None:
    server = ApiServer(tw, token=None).start()
    try:
        with server.client(token=None) as local:
            assert local.get("/api/queues").status_code == 200
            assert local.get("/").status_code == 200
            # a DNS-rebinding page reaches 127.0.0.1 under its own host name
            rebound = local.get("/api/queues", headers={"Host": "attacker.example"})
            assert rebound.status_code == 400
    finally:
        server.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com"])
def test_a_non_loopback_bind_without_token_refuses(tw: Any, host: str) -> None:
    with pytest.raises(ConfigError, match="TASKWORKS_API_TOKEN"):
        make_server(tw, host, 8765, token=None)


def test_loopback_binds_need_no_token_and_short_tokens_are_refused() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_bind(host, None)
    check_bind("0.0.0.0", TOKEN)
    with pytest.raises(ConfigError, match="16 characters") as raised:
        check_bind("0.0.0.0", "short")
    assert "short" not in str(raised.value)  # the token is never printed


@pytest.fixture
def cli_env() -> Iterator[dict[str, str]]:
    return {k: v for k, v in os.environ.items() if k != "TASKWORKS_API_TOKEN"}


def test_the_cli_refuses_a_public_bind_without_token(cli_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "taskworks", "api", "--app", "tests.apps.sample:tw",
         "--host", "0.0.0.0", "--port", "18765"],
        cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "TASKWORKS_API_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr
