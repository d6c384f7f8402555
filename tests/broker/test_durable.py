"""Durable mode end to end: ``TASKWORKS_EMBEDDED_FSYNC=always`` reaches the real server.

Each test asks the running valkey-server itself (``CONFIG GET appendfsync``), through the
paths a user takes: the ``taskworks broker`` command, the function ``taskworks up`` starts
its broker with, and a start that finds a broker already running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from taskworks.broker.embedded import EmbeddedBroker
from taskworks.settings import load_settings
from taskworks.stack import embedded_broker
from tests.support.postgres import free_port


def appendfsync(port: int) -> str:
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True) as c:
        return str(c.config_get("appendfsync")["appendfsync"])


def test_broker_command_runs_valkey_with_appendfsync_always(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "TASKWORKS_BROKER_URL"}
    env.update(TASKWORKS_EMBEDDED_FSYNC="always", TASKWORKS_EMBEDDED_PORT=str(port),
               TASKWORKS_DATA_DIR=str(tmp_path / "data"), NO_COLOR="1", TERM="dumb")
    proc = subprocess.Popen([sys.executable, "-m", "taskworks", "broker"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stderr is not None
        banner = proc.stdout.readline()  # printed once the server answers
        if not banner:  # it exited: say why
            proc.wait(30)
            pytest.fail(f"taskworks broker exited {proc.returncode}: {proc.stderr.read()}")
        assert "AOF fsync always" in banner, banner
        assert appendfsync(port) == "always"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        EmbeddedBroker(tmp_path / "data", port=port).stop()


def test_the_stack_starts_its_broker_with_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.delenv("TASKWORKS_BROKER_URL")
    monkeypatch.setenv("TASKWORKS_EMBEDDED_FSYNC", "always")
    monkeypatch.setenv("TASKWORKS_EMBEDDED_PORT", str(port))
    monkeypatch.setenv("TASKWORKS_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.embedded
    assert settings.embedded_fsync == "always"
    broker = embedded_broker(settings)  # what `taskworks up` (stack.py) starts
    try:
        server, started = broker.start()
        assert started
        assert server.port == port
        assert appendfsync(port) == "always"
    finally:
        broker.stop()


def test_reusing_a_running_broker_makes_it_durable_and_never_less(tmp_path: Path) -> None:
    port = free_port()
    first = EmbeddedBroker(tmp_path, port=port)  # everysec, the default
    try:
        first.start()
        assert appendfsync(port) == "everysec"
        server, started = EmbeddedBroker(tmp_path, port=port, fsync="always").start()
        assert started is False
        assert appendfsync(server.port) == "always"
        # a later start with the default reuses it and leaves it durable
        _, started = EmbeddedBroker(tmp_path, port=port).start()
        assert started is False
        assert appendfsync(port) == "always"
    finally:
        first.stop()
