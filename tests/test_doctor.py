"""``taskworks doctor``'s visibility check: tasks' retry policies and registered workflows.

(The CLI's own doctor tests, broker and database included, are in tests/cli/test_cli.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from taskworks.doctor import check_visibility, retry_delays, workflow_limits
from taskworks.runtime.retry import RetryPolicy
from taskworks.workflows import Step, Workflow
from tests.support.workers import ROOT
from tests.workflows.conftest import unique


def test_retry_delays_of_plain_tasks(tw: Any) -> None:
    delays = retry_delays(tw)
    assert delays["retry.max_delay"] == 300  # the default policy, once
    assert delays["tests.flaky.retry_policy.max_delay"] == 300  # its own policy
    # registered by name (tests/apps/sample.py)
    assert delays["taskworks.http_call.retry_policy.max_delay"] == 300
    assert "tests.toggle.retry_policy.max_delay" not in delays  # never retries
    assert "tests.record.retry_policy.max_delay" not in delays  # the default's


def test_workflow_steps_are_listed_by_workflow_version_and_step(tw: Any) -> None:
    name = unique("doctor")
    tw.workflows.register(Workflow(name, (
        Step("quick", "wf.record"),
        Step("slow", "wf.record", soft_timeout=500, timeout=600,
             retries=RetryPolicy(max_retries=1, base_delay=400, max_delay=400, jitter=False)),
    )))
    limits = {k: v for k, v in workflow_limits(tw).items() if name in k}
    # the retry delay is not listed: retries wait in the durable schedule, not a worker
    assert limits == {
        f"workflow {name} v1 steps[1] (slow).timeout": 600,
        f"workflow {name} v1 steps[1] (slow).soft_timeout": 500,
    }
    check = check_visibility(tw)
    assert check.ok, check.detail
    assert "not checked" not in check.detail


def test_doctor_reports_a_workflow_registered_before_the_timeout_was_lowered(
        tw: Any, tmp_path: Path) -> None:
    name = unique("lowered")
    tw.workflows.register(Workflow(name, (
        Step("crunch", "wf.record", timeout=600),
        Step("fine", "wf.record", timeout=60),
    )))
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "10000",
           "TASKWORKS_VISIBILITY_TIMEOUT": "300",
           # keep the worker's limits and the default retry policy under it
           "TASKWORKS_WORKER__SOFT_TIME_LIMIT": "100", "TASKWORKS_WORKER__TIME_LIMIT": "200",
           "TASKWORKS_RETRY__MAX_DELAY": "60"}
    done = subprocess.run([sys.executable, "-m", "taskworks", "doctor", "--app",
                           "tests.apps.sample:tw"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    line = next(ln for ln in done.stdout.splitlines() if "visibility_timeout:" in ln)
    assert line.startswith("FAIL visibility_timeout: 300s does not exceed ")
    assert f"workflow {name} v1 steps[0] (crunch).timeout=600s" in line
    assert f"workflow {name} v1 steps[1] (fine)" not in line
    # a plain task whose own policy may wait 300 s before a retry: not listed, the
    # retry waits in the durable schedule, not in a worker (broker/schedule.py)
    assert "retry_policy.max_delay" not in line
    assert "worker.time_limit" not in line
    assert " retry.max_delay" not in line
    # the definition stays registered: doctor reports, it does not change anything
    assert (name, 1) in {(n, v) for n, v, _ in tw.workflows.definitions()}


def test_doctor_prints_no_secret_of_the_settings(tmp_path: Path) -> None:
    secrets = {"db": "db-pw-4711", "billing": "billing-pw-4711", "smtp": "smtp-pw-4711",
               "auth": "auth-token-4711", "hook": "hookpath4711", "api": "api-token-4711xyz"}
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "10000",
           "TASKWORKS_DATABASE_URL": f"postgresql://app:{secrets['db']}@127.0.0.1:1/app",
           "TASKWORKS_DATABASES": json.dumps({
               "billing": f"postgresql://bill:{secrets['billing']}@127.0.0.1:1/b"}),
           "TASKWORKS_NOTIFY": json.dumps({
               "email": {"username": "ops", "password": secrets["smtp"]},
               "webhook": {"url": f"https://hooks.example.org/services/{secrets['hook']}",
                           "headers": {"Authorization": f"Bearer {secrets['auth']}"}}}),
           "TASKWORKS_API_TOKEN": secrets["api"]}
    done = subprocess.run([sys.executable, "-m", "taskworks", "doctor", "--app",
                           "tests.apps.sample:tw"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr  # the database does not answer
    for name, secret in secrets.items():
        assert secret not in done.stdout, name
        assert secret not in done.stderr, name
    lines = done.stdout.splitlines()
    checks = next(i for i, line in enumerate(lines) if line.startswith(("ok ", "FAIL ")))
    printed = json.loads("\n".join(lines[:checks]))
    assert printed["database_url"] == "postgresql://app:***@127.0.0.1:1/app"
    assert printed["databases"] == {"billing": "postgresql://bill:***@127.0.0.1:1/b"}
    assert printed["notify"]["email"]["password"] == "***"
    assert printed["notify"]["webhook"]["url"] == "https://hooks.example.org/***"
    assert printed["notify"]["webhook"]["headers"] == {"Authorization": "***"}
