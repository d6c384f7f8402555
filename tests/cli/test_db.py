"""``taskworks db upgrade`` and ``taskworks db wait``, the real command in a subprocess,
against a fresh SQLite file and a fresh database on the real PostgreSQL server."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import text

from taskworks.store.engine import Store
from taskworks.store.migrate import current_revision, head_revision, upgrade
from tests.support.postgres import free_port
from tests.support.workers import ROOT


def db(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "TASKWORKS_DATABASE_URL": database_url}
    return subprocess.run([sys.executable, "-m", "taskworks", "db", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def one_line(stream: str) -> str:
    return " ".join(stream.split())  # rich may wrap a long line


def test_upgrade_then_wait_exits_0(database_url: str) -> None:
    done = db(database_url, "upgrade")
    assert done.returncode == 0, done.stderr
    assert f"database at revision {head_revision()}" in done.stdout
    done = db(database_url, "wait", "--timeout", "0")
    assert done.returncode == 0, done.stderr
    assert f"database at revision {head_revision()} (the newest)" in done.stdout


def test_wait_on_an_empty_database_times_out(database_url: str) -> None:
    done = db(database_url, "wait", "--timeout", "0")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert (f"error: database_url: the schema is not at revision {head_revision()} after 0 s: "
            f"no schema yet; run `taskworks db upgrade`") in one_line(done.stderr)
    store = Store(database_url)
    assert current_revision(store) is None  # waiting never migrates
    store.dispose()


def test_wait_on_an_older_revision_times_out(database_url: str) -> None:
    store = Store(database_url)
    upgrade(store, "0004")
    done = db(database_url, "wait", "--timeout", "0.5", "--interval", "0.1")
    store.dispose()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "after 0.5 s: at revision 0004; run" in one_line(done.stderr)
    # the reason is told once, not on every poll
    assert done.stderr.count("waiting for schema revision") == 1, done.stderr


def test_wait_returns_once_another_process_upgrades(database_url: str) -> None:
    env = {**os.environ, "NO_COLOR": "1", "TASKWORKS_DATABASE_URL": database_url}
    waiter = subprocess.Popen([sys.executable, "-m", "taskworks", "db", "wait", "--timeout",
                               "120", "--interval", "0.2"], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert waiter.stderr is not None
        # it says it waits (so it has seen the empty schema) before we migrate
        seen = read_until(waiter.stderr, "waiting for schema revision")
        assert "no schema yet" in seen, seen
        assert waiter.poll() is None
        store = Store(database_url)
        upgrade(store)
        store.dispose()
        stdout, stderr = waiter.communicate(timeout=120)
    finally:
        waiter.kill()
        waiter.wait()
    assert waiter.returncode == 0, stderr
    assert f"database at revision {head_revision()} (the newest)" in stdout


def read_until(stream: object, marker: str, timeout: float = 60) -> str:
    """What ``stream`` (a subprocess pipe) printed up to the line holding ``marker``."""
    seen = ""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout
    while marker not in seen:
        assert time.monotonic() < deadline, seen
        if selector.select(timeout=1):
            line = stream.readline()  # type: ignore[attr-defined]
            assert line, f"the process closed its output before {marker!r}: {seen}"
            seen += line
    selector.close()
    return seen


def test_wait_refuses_a_revision_this_release_does_not_know(database_url: str) -> None:
    store = Store(database_url)
    upgrade(store)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    store.dispose()
    # at once, not after the timeout: waiting cannot fix a schema from a newer release
    done = db(database_url, "wait", "--timeout", "600")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert ("database_url: the schema is at revision '9999', which this release of taskworks "
            f"does not know (its newest is '{head_revision()}')") in one_line(done.stderr)


def test_wait_on_an_unreachable_database_hides_the_password() -> None:
    url = f"postgresql://u:s3cret@127.0.0.1:{free_port()}/x"
    done = db(url, "wait", "--timeout", "0")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert ("cannot reach the database postgresql://u:***@127.0.0.1:"
            in one_line(done.stderr))
    assert "s3cret" not in done.stdout + done.stderr


def test_wait_bad_input_exits_2(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    cases = [
        (["--timeout", "-1"], "Invalid value for '--timeout'"),
        (["--timeout", "soon"], "Invalid value for '--timeout'"),
        (["--interval", "0"], "Invalid value for '--interval'"),
        (["--interval", "inf"], "--interval: got inf, expected a finite number of seconds"),
    ]
    with ThreadPoolExecutor(4) as pool:  # side by side: each refuses before any work
        results = list(pool.map(lambda case: db(url, "wait", *case[0]), cases))
    for (args, expected), done in zip(cases, results, strict=True):
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert expected in one_line(done.stderr), (args, done.stderr)
        assert "Traceback" not in done.stderr
    done = db("mysql://u@h/x", "wait")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "database_url: got 'mysql://u@h/x'" in done.stderr
