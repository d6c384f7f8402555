"""A worker whose broker restarts reconnects and consumes again (broker/consumer.py).

Without ReconnectingConsumer, Celery 5.7 + kombu 5.7 end the worker with "Unrecoverable
error: AttributeError('NoneType' object has no attribute 'hostname')" when the Redis
connection drops. Runs on any machine; tests/multihost does the same across hosts.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import redis

from taskworks import Taskworks
from taskworks.broker.embedded import EmbeddedBroker
from taskworks.settings import load_settings
from tests.support.postgres import free_port
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess


def test_worker_consumes_again_after_its_broker_restarts(sample: Any, tmp_path: Path
                                                         ) -> None:
    broker = EmbeddedBroker(tmp_path / "data", port=free_port())
    server, _ = broker.start()
    client = Taskworks(settings=load_settings(broker_url=server.url))
    env = {**os.environ, "TASKWORKS_BROKER_URL": server.url,
           "TASKWORKS_VISIBILITY_TIMEOUT": "5"}
    worker = WorkerProcess(client.app, env, ["default"], pool="threads", concurrency=4,
                           log_dir=tmp_path)
    try:
        worker.wait_ready()
        assert client.app.send_task("tests.echo", [1]).get(timeout=20) == 1
        # the worker holds unacknowledged messages, and waits for more (a BRPOP in
        # flight), when the broker dies: closing the lost connection crashed it; and a
        # message it holds for later (a countdown) runs after the reconnection and is
        # acknowledged on the lost channel: that crashed it too
        # (a task with retries: the redelivery the broker's restart causes counts as one)
        later = client.app.send_task("tests.flaky", ["later", 0], countdown=3)
        for i in range(2):
            client.app.send_task("tests.slow_mark", [f"held{i}", 1.5])
        with redis.Redis.from_url(server.url) as r:
            wait_for(lambda: all(r.get(f"held{i}:runs") for i in range(2)),
                     what="two tasks to be running")

        os.kill(server.pid, signal.SIGKILL)  # no goodbye to the worker's connections
        broker.stop()  # forget the dead server's pid file
        broker.start()

        # sent after the restart: only a worker that reconnected and consumes runs it
        assert client.app.send_task("tests.echo", [2]).get(timeout=30) == 2
        assert later.get(timeout=30) >= 1  # the run number
        assert client.app.send_task("tests.echo", [4]).get(timeout=30) == 4
        assert worker.proc.poll() is None, worker.log_path.read_text()[-3000:]
    finally:
        worker.stop()
        broker.stop()
