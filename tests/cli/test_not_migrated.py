"""A store `taskworks db upgrade` never ran on (or not since this release): every command
that reads it says so in one line, exits 2, prints no traceback and changes nothing.
The real command in a subprocess, on a fresh SQLite data dir and on real PostgreSQL."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import make_url

from taskworks.store.engine import Store
from taskworks.store.migrate import current_revision, head_revision, upgrade
from tests.cli.test_cli import run

# every command here reads or writes the SQL store first
STORE_COMMANDS = [
    ("journal",), ("journal", "show", "some-task-id"), ("dlq", "list"), ("dlq", "show", "1"),
    ("workflow", "list"), ("workflow", "status", "some-run-id"), ("job", "status", "some-job"),
]


def expected(url: str, found: str = "has no schema yet") -> str:
    return (f"error: database_url: the store at {url} {found} (this release needs revision "
            f"{head_revision()}); run `taskworks db upgrade`")


def test_every_store_command_on_a_fresh_data_dir_says_run_db_upgrade(tmp_path: Path) -> None:
    data = tmp_path / "data"
    database = data / "taskworks.db"

    def attempt(command: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        # the default store: the data dir's SQLite file
        return run(tmp_path, *command, unset=("TASKWORKS_DATABASE_URL",),
                   TASKWORKS_DATA_DIR=str(data))

    # side by side: each is a process that only reads (or refuses to)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, STORE_COMMANDS))
    for command, done in zip(STORE_COMMANDS, results, strict=True):
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, done.stderr
        assert done.stderr.splitlines() == [expected(f"sqlite:///{database}")], done.stderr
        assert done.stdout == ""
    store = Store(f"sqlite:///{database}")
    assert inspect(store.engine).get_table_names() == []  # nothing created, nothing migrated
    store.dispose()


def test_an_older_schema_says_which_revision_it_is_at(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store(url)
    upgrade(store, "0002")  # the journal and dead letters exist, the workflow tables not yet
    done = run(tmp_path, "journal", TASKWORKS_DATABASE_URL=url)
    assert done.returncode == 0, done.stderr  # a command whose tables exist still works
    done = run(tmp_path, "workflow", "list", TASKWORKS_DATABASE_URL=url)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == [expected(url, "is at schema revision 0002")]
    assert current_revision(store) == "0002"
    store.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_an_empty_postgresql_database_names_its_url_without_the_password(
        tmp_path: Path, database_url: str) -> None:
    parsed = make_url(database_url)
    if parsed.password is None:  # the test server trusts every login: one only to hide
        parsed = parsed.set(password="s3cret")
    url = parsed.render_as_string(hide_password=False)
    password = str(parsed.password)
    done = run(tmp_path, "dlq", "list", TASKWORKS_DATABASE_URL=url)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert password not in done.stderr
    shown = url.replace(f":{password}@", ":***@")
    assert done.stderr.splitlines() == [expected(shown)]
