"""deploy/systemd: the units parse, systemd itself accepts them, and every command they run
is a real ``taskworks`` subcommand with real options (its ``--help``, run for real)."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taskworks import load_settings
from tests.support.cli_help import help_text
from tests.support.workers import ROOT

SYSTEMD = ROOT / "deploy" / "systemd"
INSTALLED = "/opt/taskworks/venv/bin/taskworks"
ENV_FILE = "/etc/taskworks/taskworks.env"


def units() -> dict[str, configparser.ConfigParser]:
    found = {}
    for path in sorted([*SYSTEMD.glob("*.service"), *SYSTEMD.glob("*.target")]):
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep case
        parser.read_string(path.read_text(), source=str(path))
        found[path.name] = parser
    return found


def commands(unit: configparser.ConfigParser) -> list[list[str]]:
    service = unit["Service"]
    return [shlex.split(service[key]) for key in ("ExecStartPre", "ExecStart") if key in service]


def test_units_parse_and_run_the_installed_taskworks_with_the_env_file() -> None:
    services = {name: unit for name, unit in units().items() if name.endswith(".service")}
    assert {"taskworks-api.service", "taskworks-beat.service", "taskworks-worker@.service",
            "taskworks-autoscale.service"} <= set(services)
    for name, unit in services.items():
        assert unit["Service"]["EnvironmentFile"] == ENV_FILE, name
        assert unit["Install"]["WantedBy"] == "taskworks.target", name
        for argv in commands(unit):
            assert argv[0] == INSTALLED, (name, argv)


def test_commands_are_real_cli_subcommands_with_real_options() -> None:
    groups = load_settings().worker_groups
    for name, unit in units().items():
        if not name.endswith(".service"):
            continue
        for argv in commands(unit):
            # systemd expands %h to the user's home: a Celery %h must be written %%h
            assert "%h" not in " ".join(argv).replace("%%h", ""), (name, argv)
            first_option = next((i for i, a in enumerate(argv) if a.startswith("-")),
                                len(argv))
            path = argv[1:first_option]  # e.g. ["db", "upgrade"], ["worker"]
            options = [a for a in argv[1:] if a.startswith("--")]
            text = help_text(path)  # fails unless the subcommand exists
            for option in options:
                assert option in text, (name, option)
            if "--group" in argv:  # the template's instance names the group
                assert argv[argv.index("--group") + 1] == "%i", name
    target = units()["taskworks.target"]["Unit"]["Wants"].split()
    workers = {w.removeprefix("taskworks-worker@").removesuffix(".service")
               for w in target if w.startswith("taskworks-worker@")}
    assert workers == set(groups)
    for wanted in target:
        template = wanted.split("@")[0] + "@.service" if "@" in wanted else wanted
        assert (SYSTEMD / template).is_file(), wanted


def test_the_api_migrates_and_every_other_service_waits_for_the_schema() -> None:
    # After=taskworks-api.service orders units on one host only, and not on failure:
    # each unit that runs tasks checks the schema itself before it starts
    default_start_timeout = 90  # systemd's DefaultTimeoutStartSec
    for name, unit in units().items():
        if not name.endswith(".service"):
            continue
        pre = shlex.split(unit["Service"]["ExecStartPre"])
        if name == "taskworks-api.service":
            assert pre[1:] == ["db", "upgrade"], name
            continue
        assert pre[1:3] == ["db", "wait"], name
        timeout = float(pre[pre.index("--timeout") + 1])
        start_timeout = float(unit["Service"].get("TimeoutStartSec", default_start_timeout))
        assert 0 < timeout < start_timeout, name  # exit 1 and a restart, not a kill
        assert unit["Service"]["Restart"] == "on-failure", name


def test_worker_stop_timeout_outlives_the_longest_task() -> None:
    time_limit = load_settings().worker.time_limit
    for name in ("taskworks-worker@.service", "taskworks-autoscale.service"):
        service = units()[name]["Service"]
        assert int(service["TimeoutStopSec"]) > time_limit, name
        assert service["KillMode"] == "mixed", name  # SIGTERM to the main process only


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    # the real paths (the installed venv, /etc) do not exist here: point them at this
    # checkout's taskworks script, then let systemd check everything else
    script = Path(sys.executable).parent / "taskworks"
    assert script.is_file()
    paths = []
    for path in [*SYSTEMD.glob("*.service"), *SYSTEMD.glob("*.target")]:
        text = path.read_text().replace(INSTALLED, str(script))
        text = text.replace(f"EnvironmentFile={ENV_FILE}", f"EnvironmentFile=-{tmp_path}/env")
        copy = tmp_path / path.name
        copy.write_text(text)
        paths.append(copy)
    for group in load_settings().worker_groups:  # instances of the template
        instance = tmp_path / f"taskworks-worker@{group}.service"
        instance.write_text((tmp_path / "taskworks-worker@.service").read_text())
        paths.append(instance)
    done = subprocess.run(["systemd-analyze", "verify",
                           *[str(p) for p in paths if "@.service" not in p.name]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    ours = [line for line in (done.stdout + done.stderr).splitlines() if "taskworks" in line]
    assert done.returncode == 0, done.stdout + done.stderr
    assert not ours, done.stdout + done.stderr
