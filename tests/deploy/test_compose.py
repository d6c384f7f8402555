"""deploy/docker-compose.yml, deploy/Dockerfile and deploy/healthcheck.py.

No Docker daemon here: the compose file is parsed and checked against the real CLI (each
command's ``--help``, run for real), the real settings (every TASKWORKS_* variable is
loaded through ``load_settings``) and itself (each worker's health check pings the node
name that worker runs under). The health-check script runs for real against a real
worker, a real API server and a real beat.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskworks import load_settings
from taskworks.cli.loader import APP_ENV
from tests.api.server import ApiServer
from tests.support.cli_help import help_text
from tests.support.postgres import free_port
from tests.support.workers import ROOT

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
HEALTHCHECK = DEPLOY / "healthcheck.py"
#: values for the variables compose interpolates (the .env a user writes)
VARIABLES = {"VALKEY_PASSWORD": "valkey-pw-0123", "POSTGRES_PASSWORD": "pg-pw-0123",
             "TASKWORKS_API_TOKEN": "a-token-of-24-characters", "TASKWORKS_APP": ""}
#: variables taskworks reads that are not fields of Settings
NOT_SETTINGS = {APP_ENV, "TASKWORKS_API_TOKEN", "TASKWORKS_CONFIG_FILE"}


def interpolate(value: str) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}; $$ is a literal $."""
    def one(match: re.Match[str]) -> str:
        name, kind, rest = match.group(1), match.group(2), match.group(3)
        if name in VARIABLES:
            return VARIABLES[name]
        if kind == ":-":
            return rest
        raise AssertionError(f"${{{name}}} has no value and no default")

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value).replace("$$", "$")


def services() -> dict[str, dict[str, Any]]:
    return dict(yaml.safe_load(COMPOSE.read_text())["services"])


def ours(service: dict[str, Any]) -> bool:
    """Services that run the taskworks image (the others are Valkey and PostgreSQL)."""
    return "build" in service


def one_shot(name: str, all_services: dict[str, dict[str, Any]]) -> bool:
    """A service others wait for to *finish* (migrations): it exits, so no health check."""
    return any(dep.get("condition") == "service_completed_successfully"
               for other in all_services.values()
               for dep_name, dep in (other.get("depends_on") or {}).items()
               if dep_name == name)


def split_command(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """``taskworks worker --group g`` -> (["worker"], {"--group": "g"})."""
    assert argv[0] == "taskworks", argv
    path = []
    rest = argv[1:]
    while rest and not rest[0].startswith("-"):
        path.append(rest.pop(0))
    options = {}
    while rest:
        name = rest.pop(0)
        assert name.startswith("--"), (argv, name)
        options[name] = rest.pop(0) if rest and not rest[0].startswith("--") else ""
    return path, options


def test_every_long_running_service_has_a_health_check() -> None:
    found = services()
    assert {"valkey", "postgres", "api", "beat", "migrate"} <= set(found)
    for name, service in found.items():
        if one_shot(name, found):
            assert service.get("restart") == "no", name
            continue
        test = service.get("healthcheck", {}).get("test")
        assert isinstance(test, list), name
        assert test[0] in ("CMD", "CMD-SHELL"), (name, test)
        assert len(test) > 1, (name, test)


def test_every_worker_group_has_a_service() -> None:
    groups = load_settings().worker_groups
    commands = [split_command(s["command"]) for s in services().values() if ours(s)]
    served = [options["--group"] for path, options in commands if path == ["worker"]]
    assert sorted(served) == sorted(groups)


def test_commands_are_real_cli_subcommands_with_real_options() -> None:
    groups = load_settings().worker_groups
    for name, service in services().items():
        if not ours(service):
            continue
        path, options = split_command(service["command"])
        text = help_text(path)
        for option in options:
            assert option in text, (name, option)
        if "--group" in options:
            assert options["--group"] in groups, name


def test_environment_names_real_settings_that_load(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = type(load_settings()).model_fields
    for name, service in services().items():
        if not ours(service):
            continue
        env = {k: interpolate(str(v)) for k, v in service["environment"].items()}
        for var in env:
            assert var.startswith("TASKWORKS_"), (name, var)
            if var in NOT_SETTINGS:
                continue
            first, *nested = var.removeprefix("TASKWORKS_").lower().split("__")
            assert first in fields, (name, var)
            annotation = fields[first].annotation
            for part in nested:  # e.g. WORKER__TIME_LIMIT: a field of the nested model
                assert part in getattr(annotation, "model_fields", {}), (name, var)
                annotation = annotation.model_fields[part].annotation  # type: ignore[union-attr]
        for var in list(os.environ):
            if var.startswith("TASKWORKS_"):
                monkeypatch.delenv(var)
        for var, value in env.items():
            monkeypatch.setenv(var, value)
        loaded = load_settings()  # raises ConfigError naming any invalid value
        assert loaded.broker_url == f"redis://:{VARIABLES['VALKEY_PASSWORD']}@valkey:6379/0"
        assert loaded.database_url is not None
        assert VARIABLES["POSTGRES_PASSWORD"] in loaded.database_url
        if "TASKWORKS_API_TOKEN" in env:
            assert loaded.api.token is not None
            assert loaded.api.token.get_secret_value() == VARIABLES["TASKWORKS_API_TOKEN"]
        assert loaded.visibility_timeout > loaded.worker.time_limit


def test_worker_health_checks_ping_the_node_the_worker_runs_as() -> None:
    time_limit = load_settings().worker.time_limit
    found = services()
    for name, service in found.items():
        if not ours(service) or one_shot(name, found):
            continue
        path, options = split_command(service["command"])
        test = service["healthcheck"]["test"]
        assert test[:2] == ["CMD", "taskworks-healthcheck"], name
        if path == ["worker"]:
            assert test[2:] == ["worker", options["--hostname"]], name
            grace = str(service["stop_grace_period"])
            assert grace.endswith("s"), name
            assert int(grace[:-1]) > time_limit, name
        elif path == ["api"]:
            assert test[2] == "api"
            assert f":{options['--port']}/api/health" in test[3], name
        else:
            assert test[2:] == [path[0]], name


def test_the_image_installs_the_health_check_and_runs_taskworks_as_pid_1() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "COPY deploy/healthcheck.py /usr/local/bin/taskworks-healthcheck" in dockerfile
    # BuildKit's per-Dockerfile ignore file lets in exactly what is copied
    allowed = {line[1:].rstrip("/") for line in
               (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    copies = [line.split()[1:-1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert copies
    for source in (s for sources in copies for s in sources):
        assert (ROOT / source).exists(), source
        assert source.rstrip("/") in allowed, source
    assert 'CMD ["taskworks"' in dockerfile  # exec form: SIGTERM reaches taskworks itself
    assert "pip install ." in dockerfile


# -- the health-check script, for real ------------------------------------------------------


def healthcheck(*args: str, **env: str) -> int:
    done = subprocess.run([sys.executable, str(HEALTHCHECK), *args], cwd=ROOT,
                          env={**os.environ, APP_ENV: "tests.apps.sample:tw", **env},
                          capture_output=True, text=True, timeout=60)
    return done.returncode


def test_healthcheck_api(tw: Any) -> None:
    server = ApiServer(tw).start()
    try:
        assert healthcheck("api", f"{server.url}/api/health") == 0
    finally:
        server.stop()
    assert healthcheck("api", f"http://127.0.0.1:{free_port()}/api/health") == 1


def test_healthcheck_worker(start_worker: Any) -> None:
    worker = start_worker(["default"])
    assert healthcheck("worker", worker.hostname) == 0
    assert healthcheck("worker", "nobody@nowhere") == 1


def test_healthcheck_beat(tw: Any, tmp_path: Path) -> None:
    assert healthcheck("beat") == 1  # the tw fixture flushed Redis: nobody leads
    log = (tmp_path / "beat.log").open("wb")
    beat = subprocess.Popen([sys.executable, "-m", "taskworks", "beat", "--app",
                             "tests.apps.sample:tw"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while healthcheck("beat") != 0:
            assert beat.poll() is None, (tmp_path / "beat.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "beat.log").read_text()
            time.sleep(0.5)
    finally:
        beat.terminate()
        beat.wait(30)
        log.close()


def test_healthcheck_usage_errors_exit_2() -> None:
    assert healthcheck() == 2
    assert healthcheck("worker") == 2
    assert healthcheck("bogus") == 2
