"""The dashboard in Debian's Chromium, driven by Playwright (no `playwright install`:
the Makefile's system-deps installs /usr/bin/chromium). Screenshots of every page go to
test-artifacts/web/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.api.server import TOKEN, ApiServer
from tests.support.workers import ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts" / "web"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (apt-get install chromium)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def server(tw: Any) -> Iterator[ApiServer]:
    started = ApiServer(tw, token=TOKEN).start()
    yield started
    started.stop()


@pytest.fixture
def page(browser: Browser, server: ApiServer) -> Iterator[Page]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    dialogs: list[str] = []
    # an alert() would mean a hostile string ran as script
    opened.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    opened.dialogs = dialogs  # type: ignore[attr-defined]
    yield opened
    context.close()


def login(page: Page) -> None:
    page.goto("/")
    page.wait_for_url("**/login")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: not url.endswith("/login"))


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
