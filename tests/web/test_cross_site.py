"""A page on another origin, in the same real Chromium as the dashboard, cannot change
anything through the API: a hidden multipart form uploading a dataset and ``no-cors``
``text/plain`` fetches registering a workflow, starting a run and submitting a task are
all refused (the reported holes), while the dashboard's own Start button works.

The attacker page is served by a second real HTTP server (``http.server`` in a thread)
on another port, reached as ``localhost`` (cross-site to ``127.0.0.1``) and as
``127.0.0.1`` (same-site: another port of the same host is the same *site*, so SameSite
cookies would go with it). The API runs without a token: the loopback setup the report
attacked, where no credential at all stands in the way."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from taskworks.api.auth import COOKIE
from taskworks.monitoring.queues import queue_depths
from taskworks.workflows import Step, Workflow
from tests.api.server import ApiServer
from tests.web.conftest import login, screenshot

ATTACK = """<!doctype html>
<html><body>
<form id="upload" method="post" enctype="multipart/form-data" target="sink"
      action="{api}/api/datasets">
  <input type="text" name="name" value="{dataset}">
  <input type="file" name="file" id="file">
</form>
<iframe name="sink" id="sink"></iframe>
<script>
const API = {api_js};
async function attack() {{
  // a hidden form: the browser's oldest cross-site write, multipart with a file
  const picked = new DataTransfer();
  picked.items.add(new File(["id,name\\n1,ada\\n"], "people.csv", {{type: "text/csv"}}));
  document.getElementById("file").files = picked.files;
  document.getElementById("upload").submit();
  // "simple" requests: no preflight, the response is opaque but the request is sent
  const simple = {{method: "POST", mode: "no-cors", credentials: "include",
                  headers: {{"Content-Type": "text/plain"}}}};
  const send = (path, body) => fetch(API + path, Object.assign({{body}}, simple)).catch(() => null);
  await send("/api/workflows", JSON.stringify({workflow}));
  await send("/api/workflows/" + encodeURIComponent({victim}) + "/runs", undefined);
  await send("/api/tasks", JSON.stringify({{name: "tests.echo", args: [1]}}));
  document.body.dataset.done = "1";
}}
attack();
</script>
</body></html>
"""


class _Attacker(BaseHTTPRequestHandler):
    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(self.page)))
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def attacker() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def open_api(tw: Any) -> Iterator[ApiServer]:
    server = ApiServer(tw, token=None).start()
    yield server
    server.stop()


@pytest.mark.parametrize("attacker_host", ["localhost", "127.0.0.1"])
def test_another_origin_cannot_write_but_the_dashboard_can(
        browser: Browser, tw: Any, redis_client: Any, open_api: ApiServer,
        attacker: ThreadingHTTPServer, attacker_host: str) -> None:
    tag = uuid.uuid4().hex[:6]
    victim, planted, dataset = f"victim-{tag}", f"planted-{tag}", f"stolen-{tag}"
    tw.workflows.register(Workflow(name=victim, steps=(
        Step("only", "wf.record", params={"label": "only", "key": f"xs:{tag}"}),)))
    planted_definition = {"name": planted, "steps": [
        {"name": "only", "task": "wf.record", "params": {"label": "x", "key": "x"}}]}
    _Attacker.page = ATTACK.format(
        api=open_api.url, api_js=json.dumps(open_api.url), dataset=dataset,
        victim=json.dumps(victim), workflow=json.dumps(planted_definition)).encode()

    context = browser.new_context(viewport={"width": 1200, "height": 800})
    try:
        evil = context.new_page()
        evil.goto(f"http://{attacker_host}:{attacker.server_port}/")
        expect(evil.locator("body")).to_have_attribute("data-done", "1", timeout=15_000)
        # the form's answer, shown in its frame: the guard's refusal
        expect(evil.frame_locator("#sink").locator("body")).to_contain_text(
            "cross-site request refused", timeout=15_000)
        screenshot(evil, f"cross-site-{attacker_host.replace('.', '-')}")

        assert dataset not in {d.name for d in tw.jobs.datasets.all()}
        assert planted not in {name for name, _, _ in tw.workflows.definitions()}
        assert tw.workflows.runs(workflow=victim) == []
        assert sum(d.backlog for d in queue_depths(redis_client, tw.queue_names()).values()) == 0

        # the dashboard, same browser, its own origin: Start works
        own = context.new_page()
        own.goto(f"{open_api.url}/workflows")
        own.locator(f"#definitions tr[data-workflow='{victim}'] button.start").click()
        own.wait_for_url("**/runs/*")
        run_id = own.url.rsplit("/", 1)[1]
        assert [r.id for r in tw.workflows.runs(workflow=victim)] == [run_id]
        expect(own.locator("#run-workflow")).to_contain_text(victim)
    finally:
        context.close()


def test_the_dashboard_logs_in_and_out_by_script(page: Page, server: ApiServer) -> None:
    """Login and logout are writes too: the page's script posts them with the header
    (a plain form could not), and logging out ends the session server-side: the cookie,
    put back in the browser, no longer opens anything."""
    page.goto("/login")
    page.fill("#token", "wrong-token-wrong-token")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("That token is not valid.")
    login(page)
    expect(page.locator("#queues tbody tr")).to_have_count(5)
    kept = [c for c in page.context.cookies() if c["name"] == COOKIE]
    assert len(kept) == 1
    assert kept[0]["httpOnly"]
    assert kept[0]["sameSite"] == "Strict"
    page.click("form.logout button")
    page.wait_for_url("**/login")
    assert page.context.cookies() == []
    # a copy kept (or stolen) before the logout, put back
    page.context.add_cookies([{"name": COOKIE, "value": kept[0]["value"], "url": server.url}])
    assert page.request.get("/api/queues").status == 401
    page.goto("/")
    page.wait_for_url("**/login")
