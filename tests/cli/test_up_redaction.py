"""``taskworks up`` against a broker that needs a password never prints the password
(neither its own banner nor the logs of the workers it starts)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import redis

from taskworks.broker.embedded import EmbeddedBroker
from tests.support.postgres import free_port
from tests.support.workers import ROOT

PASSWORD = "s3cret-broker-pw"


def test_up_hides_the_broker_password(tmp_path: Path) -> None:
    port = free_port()
    broker = EmbeddedBroker(tmp_path / "broker", port=port)
    broker.start()
    try:
        with redis.Redis(host="127.0.0.1", port=port) as admin:
            admin.config_set("requirepass", PASSWORD)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKWORKS_")}
        env.update(TASKWORKS_BROKER_URL=f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
                   TASKWORKS_DATA_DIR=str(tmp_path / "data"),
                   TASKWORKS_DATABASE_URL=f"sqlite:///{tmp_path / 'taskworks.db'}",
                   NO_COLOR="1", TERM="dumb")
        errors = (tmp_path / "stderr.log").open("w")  # the logs of up and its workers
        up = subprocess.Popen([sys.executable, "-m", "taskworks", "up", "--no-beat", "--no-api"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors,
                              text=True)
        try:
            assert up.stdout is not None
            banner = up.stdout.readline()
            up.send_signal(signal.SIGINT)  # may come before up's own handler: exit 130
            rest = up.communicate(timeout=90)[0]
        finally:
            if up.poll() is None:
                up.kill()
                up.wait()
            errors.close()
        logs = (tmp_path / "stderr.log").read_text()
        assert "worker" in logs  # the stack logged its workers: the check sees output
        assert PASSWORD not in logs
        assert banner.startswith("taskworks up: broker redis://:***@127.0.0.1:"), banner
        assert PASSWORD not in banner + rest
    finally:
        broker.stop()
