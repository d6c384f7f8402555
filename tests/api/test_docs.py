"""/docs (Swagger UI) loads its script, style sheet and icon from the API itself, never
from a CDN: it works on a machine without internet and runs no third-party script. With
a token set it needs the token (or a dashboard session), like /openapi.json
(test_sessions.py). There is no /redoc (its script fetches a logo from cdn.redoc.ly)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from tests.api.server import ApiServer

#: what each page must load, and a marker each file's content must hold
ASSETS = {
    "/docs": {"swagger-ui-bundle.js": "SwaggerUIBundle", "swagger-ui.css": ".swagger-ui",
              "favicon.png": "\x89PNG"},
}
CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class _Urls(HTMLParser):
    """Every src= and href= of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found += [value for name, value in attrs
                       if name in ("src", "href") and value]


def _urls(html: str) -> list[str]:
    parser = _Urls()
    parser.feed(html)
    # Swagger UI's schema URL sits in its script: url: '/openapi.json'
    return parser.found + re.findall(r"""\burl: ['"]([^'"]+)['"]""", html)


@pytest.mark.parametrize("page", sorted(ASSETS))
def test_the_page_loads_only_local_files_and_they_are_served(api_server: ApiServer,
                                                             page: str) -> None:
    with api_server.client() as client:
        response = client.get(page)
        assert response.status_code == 200
        html = response.text
        assert "://" not in html, html  # no absolute URL of any origin, no CDN
        urls = _urls(html)
        names = {url.rsplit("/", 1)[-1] for url in urls}
        assert set(ASSETS[page]) <= names, urls
        for url in urls:
            assert re.match("/[^/]", url), url  # a path on this server
            served = client.get(url)
            assert served.status_code == 200, url
            name = url.rsplit("/", 1)[-1]
            if name == "openapi.json":
                assert served.json()["paths"]
                continue
            suffix = "." + name.rsplit(".", 1)[-1]
            assert CONTENT_TYPES[suffix] in served.headers["content-type"], url
            assert ASSETS[page][name] in served.content.decode("latin-1"), url
            assert len(served.content) > 1000, url  # the real file, not a stub


def test_swagger_ui_oauth2_redirect_is_served_locally(api_server: ApiServer) -> None:
    with api_server.client() as client:
        response = client.get("/docs/oauth2-redirect")
        assert response.status_code == 200
        assert "://" not in response.text


def test_there_is_no_redoc_page(api_server: ApiServer) -> None:
    with api_server.client() as client:
        assert client.get("/redoc").status_code == 404
