"""The outcome journal: complete under concurrency, redacted, flushed on warm shutdown."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import redis

from taskworks.redaction import Redactor
from taskworks.runtime import journal
from tests.support.workers import ROOT, WorkerProcess


def test_n_tasks_give_n_records_and_states_reconcile(
    tw: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess], journal_rows: Callable[..., Any],
) -> None:
    # two workers of different pools write to one store at once
    start_worker(pool="prefork", concurrency=2)
    start_worker(pool="threads", concurrency=4)
    results = [tw.submit("tests.echo", [i], {"fail_every": 5}) for i in range(200)]
    for result in results:
        result.get(timeout=60, propagate=False)
    rows = journal_rows(200, "tests.echo")
    assert len(rows) == 200
    assert sorted(r.task_id for r in rows) == sorted(r.id for r in results)
    assert journal.counts_by_state(store, "tests.echo") == {"success": 160, "failure": 40}
    failed = {r.args[0] for r in rows if r.state == "failure"}
    assert failed == set(range(0, 200, 5))
    assert len({r.pid for r in rows}) >= 2


def test_warm_shutdown_writes_every_buffered_record(
    tw: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # a flush interval no test waits for, and no write before each task returns
    # (journal.durable off): only the shutdown flush can write these rows
    worker = start_worker(env={"TASKWORKS_JOURNAL__FLUSH_INTERVAL": "600",
                               "TASKWORKS_JOURNAL__BATCH_SIZE": "100000",
                               "TASKWORKS_JOURNAL__DURABLE": "false"})
    results = [tw.submit("tests.echo", [i]) for i in range(30)]
    assert [r.get(timeout=30) for r in results] == list(range(30))
    assert journal.counts_by_state(store, "tests.echo") == {}
    worker.stop()
    assert journal.counts_by_state(store, "tests.echo") == {"success": 30}


def test_secrets_are_redacted_in_the_journal(
    tw: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess], journal_rows: Callable[..., Any],
) -> None:
    start_worker()
    kwargs = {"password": "hunter2", "Api_Key": "k-123", "config": {"db_token": "t-9",
              "host": "db.local", "items": [{"client_secret": "s"}]}}
    tw.submit("tests.echo", [1], kwargs).get(timeout=30)
    row = journal_rows(1, "tests.echo")[0]
    assert row.kwargs == {"password": "***", "Api_Key": "***", "config": {
        "db_token": "***", "host": "db.local", "items": [{"client_secret": "***"}]}}
    assert "hunter2" not in str(row.kwargs)


def test_redactor_words_are_configurable() -> None:
    redact = Redactor(["pin"])
    assert redact({"pin": 1234, "password": "x", "nested": [{"PIN_code": 1}]}) == {
        "pin": "***", "password": "x", "nested": [{"PIN_code": "***"}]}
    assert Redactor([])({"password": "x"}) == {"password": "x"}


def test_retention_by_age_and_count(tw: Any, store: Any) -> None:
    from datetime import UTC, datetime, timedelta

    from taskworks.settings import JournalSettings

    now = datetime.now(UTC)
    writer = journal.JournalWriter(store)
    for days in (40, 31, 5, 1, 0):
        writer.add({"task_id": f"t{days}", "name": "x", "state": "success", "attempt": 1,
                    "finished_at": now - timedelta(days=days)})
    writer.close()
    deleted = journal.enforce_retention(store, JournalSettings(retention_days=30, max_rows=2),
                                        now)
    assert deleted == {"journal_by_age": 2, "journal_by_count": 1}
    remaining = journal.query(store, journal.JournalQuery(limit=10))
    assert sorted(r.task_id for r in remaining) == ["t0", "t1"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskworks", *args, "--app",
                           "tests.apps.sample:tw"], cwd=ROOT, env=os.environ,
                          capture_output=True, text=True, timeout=60)


def test_journal_cli_filters_and_shows_one_task(
    tw: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess], journal_rows: Callable[..., Any],
) -> None:
    start_worker()
    ok = tw.submit("tests.echo", [1])
    bad = tw.submit("tests.critical", ["disk on fire"])
    ok.get(timeout=30)
    bad.get(timeout=30, propagate=False)
    journal_rows(2)

    failures = _cli("journal", "--state", "failure", "--since", "1h", "--severity", "critical")
    assert failures.returncode == 0, failures.stderr
    assert bad.id in failures.stdout
    assert ok.id not in failures.stdout

    shown = _cli("journal", "show", bad.id)
    assert shown.returncode == 0, shown.stderr
    assert "disk on fire" in shown.stdout
    assert "Traceback" in shown.stdout
    assert "severity critical" in shown.stdout


@pytest.mark.parametrize(("args", "field"), [
    (["journal", "--since", "yesterday"], "--since"),
    (["journal", "--state", "exploded"], "state"),
    (["journal", "show", "no-such-task"], "TASK_ID"),
])
def test_journal_cli_bad_input_exits_2(store: Any, args: list[str], field: str) -> None:
    done = _cli(*args)
    assert done.returncode == 2
    assert field in done.stderr
    assert "Traceback" not in done.stderr
