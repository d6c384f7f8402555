"""The dashboard, end to end in Chromium: log in, every page live, replay a dead letter,
reset a breaker, start a workflow and watch its DAG turn green, hostile strings escaped."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import redis
from playwright.sync_api import Page, expect

from taskworks.workflows import Step, Workflow
from tests.api.server import ApiServer
from tests.support.wait import wait_for
from tests.web.conftest import login, screenshot

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


def test_login_refuses_a_wrong_token(page: Page) -> None:
    page.goto("/journal")
    page.wait_for_url("**/login")
    page.fill("#token", "wrong-token-wrong-token")
    page.click("button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("That token is not valid.")
    screenshot(page, "login-refused")


def test_every_page_is_live(page: Page, tw: Any, start_worker: Callable[..., Any]) -> None:
    worker = start_worker(["default"])
    ids = [tw.submit("tests.echo", [i], {"fail_every": 4}).id for i in range(1, 5)]
    login(page)
    screenshot(page, "overview-first")
    expect(page.locator("#queues tbody tr")).to_have_count(5)
    expect(page.locator("#workers tbody tr td").first).to_have_text(worker.hostname)
    expect(page.locator("#worker-count")).to_have_text("1")
    # the chart grows a point per poll: a line per queue once two polls are in
    expect(page.locator("#queue-chart polyline")).to_have_count(5)
    expect(page.locator("#failure-rate")).not_to_have_text("\u2013", timeout=15_000)
    screenshot(page, "overview")

    page.goto("/journal")
    rows = page.locator("#journal tbody tr")
    for task_id in ids:  # the session's journal also holds other tests' entries
        expect(rows.filter(has_text=task_id)).to_have_count(1, timeout=15_000)
    page.select_option("select[name=state]", "failure")
    page.click("#journal-filters button")
    expect(rows.filter(has_text=ids[0])).to_have_count(0)
    expect(rows.filter(has_text=ids[3])).to_have_count(1)
    rows.filter(has_text=ids[3]).click()
    expect(page.locator("pre.traceback")).to_contain_text("item 4 fails")
    screenshot(page, "journal")

    page.goto("/autoscale")
    expect(page.locator("#groups tbody tr")).to_have_count(3)
    expect(page.locator("#autoscale-state")).to_contain_text("no supervisor is running")
    screenshot(page, "autoscale")


def test_replay_a_dead_letter(page: Page, tw: Any, redis_client: redis.Redis,
                              start_worker: Callable[..., Any]) -> None:
    start_worker(["default"])
    redis_client.set("web-dlq:fail", 1)
    failed = tw.submit("tests.toggle", ["web-dlq"])
    letter = wait_for(lambda: next((r for r in tw.dead_letters.find()
                                    if r.task_id == failed.id), None), what="the dead letter")
    redis_client.delete("web-dlq:fail")
    login(page)
    page.goto("/dlq")
    row = page.locator(f"#dlq tr[data-id='{letter.id}']")
    expect(row).to_contain_text("KeyError")
    screenshot(page, "dlq-before-replay")
    row.locator("button.replay").click()
    expect(page.locator("#message")).to_contain_text(f"dead letter {letter.id} replayed")
    expect(row.locator("td.replays")).to_have_text("1")
    wait_for(lambda: redis_client.get("web-dlq:ok") == "1", what="the replayed task to run")
    screenshot(page, "dlq")


def test_reset_a_breaker(page: Page, tw: Any, redis_client: redis.Redis,
                         start_worker: Callable[..., Any]) -> None:
    start_worker(["default"])
    redis_client.set("web-brk:fail", 1)
    for _ in range(2):
        tw.submit("tests.guarded_long", ["web-brk"])
    wait_for(lambda: tw.breakers.show("tests.guarded_long").state.value == "open",
             what="the breaker to open")
    login(page)
    page.goto("/breakers")
    row = page.locator("#breakers tr[data-name='tests.guarded_long']")
    expect(row.locator(".state")).to_have_text("open")
    screenshot(page, "breakers-open")
    row.locator("button.reset").click()
    expect(row.locator(".state")).to_have_text("closed")
    assert tw.breakers.show("tests.guarded_long").state.value == "closed"
    screenshot(page, "breakers")


def _data_processing(name: str) -> Workflow:
    key = f"wf:web:{uuid.uuid4().hex[:6]}"
    def rec(step: str, *deps: str) -> Step:
        return Step(step, "wf.record", params={"label": step, "key": key, "sleep": 0.2},
                    depends_on=deps)
    return Workflow(name=name, steps=(
        rec("extract"), rec("clean", "extract"), rec("validate", "extract"),
        rec("aggregate", "clean", "validate"), rec("report", "aggregate")))


def test_start_a_workflow_and_see_its_dag_turn_green(page: Page, tw: Any,
                                                     start_worker: Callable[..., Any]) -> None:
    start_worker(["default"], pool="threads", concurrency=4)
    name = f"data_processing-{uuid.uuid4().hex[:6]}"
    tw.workflows.register(_data_processing(name))
    login(page)
    page.goto("/workflows")
    row = page.locator(f"#definitions tr[data-workflow='{name}']")
    row.locator("input.run-input").fill('{"dataset": "sales"}')
    row.locator("button.start").click()
    page.wait_for_url("**/runs/*")
    expect(page.locator("#dag g.node")).to_have_count(5)
    expect(page.locator("#dag path.edge")).to_have_count(5)
    screenshot(page, "run-in-progress")
    expect(page.locator("#dag g.node[data-state=SUCCEEDED]")).to_have_count(5,
                                                                          timeout=30_000)
    expect(page.locator("#run-state")).to_have_text("SUCCEEDED")
    fill = page.locator("#dag g.node[data-step=report] rect").get_attribute("fill")
    assert fill == "#2e9d57"  # green
    screenshot(page, "run")
    run_id = page.url.rsplit("/", 1)[1]
    assert tw.workflows.status(run_id).input == {"dataset": "sales"}
    page.goto("/workflows")
    expect(page.locator("#runs tbody tr").first).to_contain_text(name)
    screenshot(page, "workflows")


def test_hostile_strings_are_shown_escaped(page: Page, tw: Any, server: ApiServer,
                                           redis_client: redis.Redis,
                                           start_worker: Callable[..., Any]) -> None:
    start_worker(["default"])
    tw.workflows.register(Workflow(name=HOSTILE, steps=(
        Step("only", "wf.record", params={"label": HOSTILE}),)))
    run = tw.workflows.start(HOSTILE, {"note": HOSTILE})
    redis_client.set(f"{HOSTILE}:fail", 1)
    failed = tw.submit("tests.toggle", [HOSTILE])
    wait_for(lambda: any(r.task_id == failed.id for r in tw.dead_letters.find()),
             what="the hostile dead letter")
    run.wait(timeout=30)
    login(page)
    for path, shows in (("/workflows", "#definitions"), (f"/runs/{run.id}", "#run-workflow"),
                        ("/journal", "#journal"), ("/dlq", "#dlq")):
        page.goto(path)
        expect(page.locator(shows)).to_contain_text(HOSTILE)
        # nothing the user supplied became markup: our one script, no injected image
        assert page.locator("script").count() == 1
        assert page.locator("img").count() == 0
        screenshot(page, "hostile-" + path.strip("/").split("/")[0])
    assert page.dialogs == []  # type: ignore[attr-defined]
    # and the server-rendered page carries it escaped in the HTML itself
    html = page.request.get(f"{server.url}/runs/{run.id}").text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert HOSTILE not in html


def test_a_jobs_partition_bars_reach_100_percent(page: Page, tw: Any, tmp_path: Any,
                                                 redis_client: redis.Redis,
                                                 start_worker: Callable[..., Any]) -> None:
    from taskworks.runtime.retry import RetryPolicy

    start_worker(["cpu_intensive"], pool="threads", concurrency=2)
    name = f"{HOSTILE}-{uuid.uuid4().hex[:6]}"  # a hostile dataset name, shown as text
    path = tmp_path / "numbers.jsonl"
    path.write_text("".join(f'{{"v": {i}}}\n' for i in range(40)))
    tw.jobs.datasets.import_file(path, name)
    key = f"web-job-{uuid.uuid4().hex[:6]}"
    redis_client.set(f"{key}:fail:30", 1)  # the last partition fails until the key goes
    job_id = tw.jobs.start(name, "tests.slow_sum", {"key": key}, 10,
                           retries=RetryPolicy(max_retries=0))
    login(page)
    page.goto("/jobs")
    row = page.locator(f"#jobs tr[data-job='{job_id}']")
    expect(row.locator(".state")).to_have_text("failed", timeout=30_000)
    expect(row).to_contain_text(HOSTILE)
    expect(row.locator(".strip .bar")).to_have_count(4)
    expect(row.locator(".strip .bar[data-partition='3']")).to_have_attribute("data-state",
                                                                            "FAILED")
    assert row.locator(".strip .bar[data-partition='3']").get_attribute("data-percent") == "0"
    screenshot(page, "jobs-failed")

    row.locator("a").first.click()
    page.wait_for_url(f"**/jobs/{job_id}")
    expect(page.locator("#job-state")).to_have_text("failed")
    failed = page.locator("#partitions tr[data-partition='3']")
    expect(failed).to_contain_text("told to fail")
    expect(page.locator("#job-dataset")).to_have_text(name)
    assert page.locator("#result").is_hidden()
    screenshot(page, "job-failed")

    redis_client.delete(f"{key}:fail:30")
    page.click("#job-retry")
    expect(page.locator("#job-state")).to_have_text("completed", timeout=30_000)
    expect(page.locator("#partitions .bar[data-percent='100']")).to_have_count(4)
    expect(page.locator("#job-bar")).to_have_attribute("data-percent", "100")
    expect(page.locator("#job-result")).to_contain_text('"sum": 780')
    screenshot(page, "job")

    page.goto("/jobs")
    expect(row.locator(".strip .bar[data-percent='100']")).to_have_count(4)
    expect(row.locator(".bar.job-completed")).to_have_attribute("data-percent", "100")
    expect(row.locator("a.result-link")).to_have_attribute("href", f"/jobs/{job_id}#result")
    screenshot(page, "jobs")

    # the job's generated workflow run links to the job page, not to a DAG of partitions
    page.goto("/workflows")
    expect(page.locator(f"#runs a[href='/jobs/{job_id}']")).to_have_count(1)

    page.goto("/datasets")
    dataset = page.locator("#datasets tbody tr").filter(has_text=name)
    expect(dataset).to_contain_text("40")
    dataset.click()
    expect(page.locator("#datasets table.head tbody tr")).to_have_count(10)
    expect(page.locator("#datasets table.head tbody tr").first).to_contain_text("0")
    screenshot(page, "datasets")
    assert page.locator("script").count() == 1
    assert page.locator("img").count() == 0
    assert page.dialogs == []  # type: ignore[attr-defined]
