"""/docs renders in Chromium with every request to another origin refused: the API's own
copy of Swagger UI is all it needs (a machine without internet), and the page asks no
third party for anything. With a token set it needs a login first, and its "Try it out"
sends the header every write needs (the schema declares it)."""

from __future__ import annotations

from playwright.sync_api import Page, Route

from tests.api.server import ApiServer
from tests.web.conftest import login, screenshot


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
    page.wait_for_url("**/login")  # the schema maps every operation: not without the token
    login(page)
    page.goto("/docs")
    page.wait_for_selector(".opblock", timeout=20_000)  # the operations are drawn
    ui = page.locator("#swagger-ui")
    # Swagger UI 5 renders OpenAPI 3.1 (FastAPI's); 4 would say it cannot
    assert "Unable to render" not in ui.inner_text()
    assert page.locator(".opblock").count() >= 10
    assert page.locator(".opblock-summary-path", has_text="/api/tasks").count() >= 1
    screenshot(page, "api-docs-swagger")
    assert refused == []



def test_try_it_out_passes_the_cross_site_guard(page: Page, server: ApiServer) -> None:
    login(page)
    page.goto("/docs")
    operation = page.locator(".opblock-post").filter(has_text="/api/tasks").first
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    with page.expect_response(lambda r: r.url.endswith("/api/tasks")) as sent:
        operation.locator("button.execute").click()
    # Swagger UI's example names no registered task: refused by the handler (422), not
    # by the guard (403), so the header went with it
    assert sent.value.request.headers.get("x-taskworks") == "1"
    assert sent.value.status == 422, sent.value.text()
