"""The real ``taskworks`` command in a subprocess: exit codes and messages a user sees."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from taskworks.broker.embedded import EmbeddedBroker
from tests.support.keys import written_keys

APP = "tests.apps.sample:tw"


def run(cwd: Path, *args: str, unset: tuple[str, ...] = (), timeout: float = 60,
        **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m taskworks ARGS`` in CWD with the session's environment plus ENV."""
    full_env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", **env}
    for name in unset:
        full_env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "taskworks", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def doctor_output(stdout: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Split doctor's stdout into the printed configuration and {check name: status line}."""
    lines = stdout.splitlines()
    first_check = next(i for i, line in enumerate(lines) if line.startswith(("ok ", "FAIL ")))
    configuration = json.loads("\n".join(lines[:first_check]))
    checks = {line.split(" ", 1)[1].split(":", 1)[0]: line for line in lines[first_check:]}
    return configuration, checks


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A loopback port some other program (this socket) is listening on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


# -- user mistakes: one clear message, exit 2, no traceback --------------------------------


def test_malformed_broker_url(tmp_path: Path) -> None:
    done = run(tmp_path, "doctor", TASKWORKS_BROKER_URL="http://x")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "broker_url: got 'http://x'" in done.stderr
    assert "expected a Redis/Valkey URL" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(("url", "expected"), [
    ("unix:///run/valkey.sock", "unix:// sockets are not supported"),
    ("rediss://:s3cret@cache:6380/0?ssl_cert_reqs=CERT_REQUIRED",
     "expected ssl_cert_reqs to be one of required, optional, none"),
])
def test_broker_url_no_client_reads_alike(tmp_path: Path, url: str, expected: str) -> None:
    done = run(tmp_path, "doctor", TASKWORKS_BROKER_URL=url)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "broker_url: got '" in done.stderr
    assert expected in " ".join(done.stderr.split())  # rich may wrap the line
    assert "s3cret" not in done.stderr
    assert done.stdout == ""


def test_unknown_queue_in_routes(tmp_path: Path) -> None:
    done = run(tmp_path, "submit", "tests.record", "--app", APP,
               TASKWORKS_ROUTES=json.dumps({"reports.*": "nosuch"}))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "routes['reports.*'] names unknown queue 'nosuch'" in done.stderr


def test_bad_settings_from_a_config_file_in_cwd(tmp_path: Path) -> None:
    (tmp_path / "taskworks.toml").write_text('embedded_fsync = "sometimes"\n')
    done = run(tmp_path, "doctor")
    assert done.returncode == 2, done.stderr
    assert "embedded_fsync: got 'sometimes'" in done.stderr
    assert "'everysec' or 'always'" in done.stderr
    assert "Traceback" not in done.stderr


def test_broker_port_in_use(tmp_path: Path, listening_port: int) -> None:
    data_dir = tmp_path / "data"
    try:
        done = run(tmp_path, "broker", unset=("TASKWORKS_BROKER_URL",), timeout=30,
                   TASKWORKS_DATA_DIR=str(data_dir),
                   TASKWORKS_EMBEDDED_PORT=str(listening_port))
    finally:
        EmbeddedBroker(data_dir, port=listening_port).stop()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"embedded_port: port {listening_port} on 127.0.0.1 is in use" in done.stderr
    assert not (data_dir / "valkey" / "valkey.pid").exists()


def test_broker_refuses_when_a_broker_url_is_set(tmp_path: Path) -> None:
    done = run(tmp_path, "broker", TASKWORKS_BROKER_URL="redis://127.0.0.1:1/0")
    assert done.returncode == 2, done.stderr
    assert "broker_url: got 'redis://127.0.0.1:1/0', expected unset" in done.stderr


def test_submit_with_args_that_are_not_json(tmp_path: Path, redis_client: redis.Redis) -> None:
    done = run(tmp_path, "submit", "tests.record", "--args", "{bad", "--app", APP)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "--args: got '{bad', expected JSON" in done.stderr
    assert written_keys(redis_client) == []  # nothing was sent


@pytest.mark.parametrize(("option", "value", "expected"), [
    ("--args", "{}", "--args: got '{}', expected a JSON array"),
    ("--kwargs", "[1]", "--kwargs: got '[1]', expected a JSON object"),
])
def test_submit_with_json_of_the_wrong_kind(tmp_path: Path, option: str, value: str,
                                            expected: str) -> None:
    done = run(tmp_path, "submit", "tests.record", option, value, "--app", APP)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr


def test_submit_sends_the_task(tmp_path: Path, redis_client: redis.Redis) -> None:
    done = run(tmp_path, "submit", "tests.record", "--args", '["hello"]', "--priority", "9",
               "--app", APP)
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.strip()
    assert str(uuid.UUID(task_id)) == task_id
    # priority 9 is kombu's 0: the plain queue list
    messages = [json.loads(m) for m in redis_client.lrange("default", 0, -1)]
    assert [m["headers"]["id"] for m in messages] == [task_id]
    assert messages[0]["headers"]["task"] == "tests.record"


def test_submit_with_an_app_that_does_not_import(tmp_path: Path) -> None:
    done = run(tmp_path, "submit", "tests.record", "--app", "no_such_module_xyz:tw")
    assert done.returncode == 2, done.stderr
    assert "--app: got 'no_such_module_xyz:tw', expected an importable module" in done.stderr


def test_worker_with_an_unknown_queue(tmp_path: Path) -> None:
    done = run(tmp_path, "worker", "--queues", "default,nosuch", "--app", APP, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert ("--queues: got 'nosuch', expected one of default, cpu_intensive, io_intensive, "
            "priority, scheduled") in done.stderr


def test_worker_with_an_unknown_group(tmp_path: Path) -> None:
    done = run(tmp_path, "worker", "--group", "nosuch", "--app", APP, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "--group: got 'nosuch', expected one of general, cpu, priority" in done.stderr


# -- doctor ------------------------------------------------------------------------------


def test_doctor_passes_against_the_session_broker(tmp_path: Path, broker_url: str) -> None:
    done = run(tmp_path, "doctor", "--app", APP,
               TASKWORKS_DATABASE_URL=f"sqlite:///{tmp_path / 'doctor.db'}")
    assert done.returncode == 0, done.stdout + done.stderr
    configuration, checks = doctor_output(done.stdout)
    assert configuration["broker_url"] == broker_url
    assert configuration["result_backend"] == broker_url
    assert configuration["database_url"] == f"sqlite:///{tmp_path / 'doctor.db'}"
    assert configuration["embedded_broker"] is False
    assert configuration["queues"] == ["default", "cpu_intensive", "io_intensive", "priority",
                                       "scheduled"]
    assert sorted(checks) == ["broker", "database", "visibility_timeout"]
    assert all(line.startswith("ok ") for line in checks.values()), checks


def test_doctor_hides_the_database_password(tmp_path: Path, broker_url: str) -> None:
    done = run(tmp_path, "doctor", "--app", APP,
               TASKWORKS_DATABASE_URL="postgresql://u:s3cret@127.0.0.1:1/x")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "s3cret" not in done.stdout
    assert "s3cret" not in done.stderr
    configuration, checks = doctor_output(done.stdout)
    assert configuration["database_url"] == "postgresql://u:***@127.0.0.1:1/x"
    assert checks["database"].startswith("FAIL database:")
    assert checks["broker"].startswith("ok broker:")


def test_doctor_hides_a_password_given_as_a_url_parameter(tmp_path: Path) -> None:
    # regression: redact_url hid only user:password@, and a password in the query
    # string (libpq/psycopg and redis-py both accept ?password=) was printed as is
    done = run(tmp_path, "doctor", "--app", APP,
               TASKWORKS_DATABASE_URL="postgresql://u@127.0.0.1:1/x?password=s3cret")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "s3cret" not in done.stdout


def test_doctor_flags_a_visibility_timeout_below_the_time_limit(tmp_path: Path) -> None:
    done = run(tmp_path, "doctor", "--app", APP, TASKWORKS_VISIBILITY_TIMEOUT="100",
               TASKWORKS_DATABASE_URL=f"sqlite:///{tmp_path / 'doctor.db'}")
    assert done.returncode == 1, done.stdout + done.stderr
    configuration, checks = doctor_output(done.stdout)
    assert configuration["visibility_timeout"] == 100
    line = checks["visibility_timeout"]
    assert line.startswith("FAIL visibility_timeout: 100s does not exceed worker.time_limit=1800s")
    assert "raise TASKWORKS_VISIBILITY_TIMEOUT" in line
    assert checks["broker"].startswith("ok ")
    assert checks["database"].startswith("ok ")
