"""The dashboard's scheduled tasks page in Chromium: counts, the next tasks due, and a
cancel through the same guarded API call as every other write."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from tests.web.conftest import login, screenshot


def test_see_and_cancel_scheduled_tasks(page: Page, tw: Any) -> None:
    kept = tw.submit("tests.echo", [1], countdown=300).id
    doomed = tw.submit("tests.echo", [2], countdown=600, queue="io_intensive").id
    login(page)
    page.click("nav a[href='/scheduled']")
    expect(page.locator("#scheduled tbody tr")).to_have_count(2)
    expect(page.locator("#scheduled-total")).to_have_text("2")
    expect(page.locator("#scheduled-soon")).to_have_text("0 · 2 · 2")
    expect(page.locator("#mover-lag")).to_have_text("0.0 s")
    by_queue = page.locator("#scheduled-queues tr[data-queue='io_intensive'] td")
    expect(by_queue.last).to_have_text("1")
    screenshot(page, "scheduled")
    page.locator(f"#scheduled tr[data-id='{doomed}'] button.cancel").click()
    expect(page.locator("#message")).to_have_text(f"scheduled task {doomed} cancelled")
    expect(page.locator("#scheduled tbody tr")).to_have_count(1)
    expect(page.locator(f"#scheduled tr[data-id='{kept}']")).to_have_count(1)
    expect(page.locator("#scheduled-queues tbody tr")).to_have_count(1)
    assert [t.id for t in tw.scheduled.list()] == [kept]
    assert page.dialogs == []  # type: ignore[attr-defined]
