"""Dashboard sessions on a real uvicorn server and the real Valkey: they expire after
``api.session_ttl``, logout revokes them server-side (a copied cookie stops working),
a new token ends them; login attempts are limited per client address across API
processes; /docs and /openapi.json need the token or a session when one is set. Every
test here fails on the old fixed-HMAC cookie."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from taskworks import keys
from taskworks.api.auth import COOKIE
from tests.api.server import GUARD, TOKEN, ApiServer
from tests.support.wait import wait_for


def _browser(server: ApiServer, cookie: str | None = None) -> httpx.Client:
    """A client holding no token: what a browser is, the guard header aside."""
    client = httpx.Client(base_url=server.url, headers=GUARD, timeout=30)
    if cookie is not None:
        client.cookies.set(COOKIE, cookie)
    return client


def _login(browser: httpx.Client, token: str = TOKEN) -> httpx.Response:
    return browser.post("/login", data={"token": token})


def _sessions(redis_client: redis.Redis) -> list[str]:
    return list(redis_client.scan_iter(keys.API_SESSION + "*"))


@pytest.fixture
def short(tw: Any) -> Iterator[ApiServer]:
    server = ApiServer(tw, token=TOKEN, session_ttl=2).start()
    yield server
    server.stop()


def test_a_session_expires_after_its_ttl(tw: Any, short: ApiServer,
                                         redis_client: redis.Redis) -> None:
    with _browser(short) as browser:
        done = _login(browser)
        assert done.status_code == 303
        assert "max-age=2" in done.headers["set-cookie"].lower()
        cookie = browser.cookies[COOKIE]
        assert TOKEN not in cookie  # a random id, not the token nor a function of it
        assert browser.get("/api/queues").status_code == 200
        assert len(_sessions(redis_client)) == 1
    other = ApiServer(tw, token=TOKEN[::-1]).start()  # same Redis, another token
    try:
        with _browser(other, cookie) as elsewhere:  # a new token ends every session
            assert elsewhere.get("/api/queues").status_code == 401
    finally:
        other.stop()
    time.sleep(2.5)
    # the same cookie, replayed past its lifetime (a browser would have dropped it)
    with _browser(short, cookie) as replay:
        assert replay.get("/api/queues").status_code == 401
        assert replay.get("/").headers["location"] == "/login"
    assert _sessions(redis_client) == []


def test_logout_revokes_the_session_everywhere(api_server: ApiServer,
                                               redis_client: redis.Redis) -> None:
    with _browser(api_server) as browser:
        assert _login(browser).status_code == 303
        cookie = browser.cookies[COOKIE]
        assert browser.get("/api/queues").status_code == 200
        # a logout is a write like any other: not without the header
        with _browser(api_server, cookie) as forged:
            forged.headers.pop("X-Taskworks")
            assert forged.post("/logout").status_code == 403
        assert browser.get("/api/queues").status_code == 200
        out = browser.post("/logout")
        assert out.status_code == 303
        assert out.headers["location"] == "/login"
        assert COOKIE not in browser.cookies
    assert _sessions(redis_client) == []
    # the old cookie, kept or stolen, no longer works
    with _browser(api_server, cookie) as replay:
        assert replay.get("/api/queues").status_code == 401
        assert replay.get("/").status_code == 303
        assert replay.post("/api/tasks", json={"name": "tests.echo"}).status_code == 401


def test_login_attempts_are_limited_across_api_processes(tw: Any,
                                                          redis_client: redis.Redis) -> None:
    limits = {"login_attempts": 3, "login_window": 3}
    first, second = (ApiServer(tw, token=TOKEN, **limits).start() for _ in range(2))
    try:
        with _browser(first) as one, _browser(second) as two:
            assert _login(one, "wrong-wrong-wrong-1").status_code == 401
            assert _login(two, "wrong-wrong-wrong-2").status_code == 401
            assert _login(one, "wrong-wrong-wrong-3").status_code == 401
            # the fourth, on either server, even with the right token
            for browser in (two, one):
                limited = _login(browser)
                assert limited.status_code == 429, limited.text
                assert 1 <= int(limited.headers["retry-after"]) <= 3
                assert "too many login attempts" in limited.json()["detail"]
                assert COOKIE not in browser.cookies
            assert _sessions(redis_client) == []
            # the window ends: the right token works again
            wait_for(lambda: _login(one).status_code == 303, timeout=10,
                     what="the login window to end")
            assert one.get("/api/queues").status_code == 200
    finally:
        first.stop()
        second.stop()


DOCS = ("/docs", "/openapi.json", "/docs/assets/swagger-ui.css", "/docs/oauth2-redirect")


def test_docs_need_the_token_or_a_session(tw: Any, api_server: ApiServer) -> None:
    with api_server.client(token=None) as anonymous:
        for path in DOCS:
            response = anonymous.get(path, follow_redirects=False)
            if path == "/docs":  # a browser is sent to log in
                assert response.status_code == 303, path
                assert response.headers["location"] == "/login"
            else:
                assert response.status_code == 401, path
                assert response.headers["www-authenticate"] == "Bearer"
        assert anonymous.get("/openapi.json", headers={
            "Authorization": "Bearer wrong-wrong-wrong-wrong"}).status_code == 401
    with api_server.client() as bearer:
        for path in DOCS:
            assert bearer.get(path).status_code == 200, path
    with _browser(api_server) as browser:
        assert _login(browser).status_code == 303
        for path in DOCS:
            assert browser.get(path).status_code == 200, path
    # the probes' route stays open
    with api_server.client(token=None) as anonymous:
        assert anonymous.get("/api/health").status_code in (200, 503)
    # without a token (loopback only) nothing is authenticated, the docs neither
    tokenless = ApiServer(tw, token=None).start()
    try:
        with tokenless.client(token=None) as local:
            for path in DOCS:
                assert local.get(path).status_code == 200, path
    finally:
        tokenless.stop()
