"""``taskworks scheduled list|show|cancel``, the real command in a subprocess, over tasks
the sample app scheduled for real in the session's Valkey."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from tests.cli.test_cli import APP, run


def test_list_show_and_cancel(tmp_path: Path, tw: Any, redis_client: redis.Redis) -> None:
    first = tw.submit("tests.echo", [1], {"secret": "s3cret"}, countdown=300).id
    second = tw.submit("tests.echo", [2], countdown=600, queue="io_intensive").id

    # commands that do not depend on each other run side by side (each starts a process)
    with ThreadPoolExecutor(2) as pool:
        listing = pool.submit(run, tmp_path, "scheduled", "list", "--json", "--app", APP)
        showing = pool.submit(run, tmp_path, "scheduled", "show", first, "--json", "--app", APP)
        listed, shown = listing.result(), showing.result()
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["id"] for r in rows] == [first, second]
    assert (rows[1]["queue"], rows[1]["priority"], rows[1]["retries"]) == ("io_intensive", 5, 0)

    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["kwargs"] == {"secret": "***"}
    assert "s3cret" not in shown.stdout

    cancelled = run(tmp_path, "scheduled", "cancel", first, "--app", APP)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"cancelled tests.echo {first}" in cancelled.stdout

    with ThreadPoolExecutor(2) as pool:
        tabling = pool.submit(run, tmp_path, "scheduled", "list", "--queue", "io_intensive",
                              "--app", APP)
        cancelling = pool.submit(run, tmp_path, "scheduled", "cancel", first, "--app", APP)
        table, again = tabling.result(), cancelling.result()
    assert table.returncode == 0, table.stderr
    assert second in table.stdout
    assert first not in table.stdout
    assert "by queue: io_intensive 1" in table.stdout

    assert again.returncode == 2
    assert again.stderr.startswith(f"error: TASK_ID: got '{first}', expected the id of a "
                                   "scheduled task")
    assert "Traceback" not in again.stderr
