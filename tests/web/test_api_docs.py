"""/docs renders in Chromium with every request to another origin refused: the API's own
copy of Swagger UI is all it needs (a machine without internet), and the page asks no
third party for anything."""

from __future__ import annotations

from playwright.sync_api import Page, Route

from tests.api.server import ApiServer
from tests.web.conftest import screenshot


def _local_only(page: Page, server: ApiServer) -> list[str]:
    """Refuse every request that leaves the API's origin; returns the list of them."""
    refused: list[str] = []

    def route(r: Route) -> None:
        if r.request.url.startswith(server.url + "/"):
            r.continue_()
        else:
            refused.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    return refused


def test_swagger_ui_renders_every_operation_offline(page: Page, server: ApiServer) -> None:
    refused = _local_only(page, server)
    page.goto("/docs")
    page.wait_for_selector(".opblock", timeout=20_000)  # the operations are drawn
    ui = page.locator("#swagger-ui")
    # Swagger UI 5 renders OpenAPI 3.1 (FastAPI's); 4 would say it cannot
    assert "Unable to render" not in ui.inner_text()
    assert page.locator(".opblock").count() >= 10
    assert page.locator(".opblock-summary-path", has_text="/api/tasks").count() >= 1
    screenshot(page, "api-docs-swagger")
    assert refused == []

