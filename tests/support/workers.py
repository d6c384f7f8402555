"""Real Celery worker processes for tests, started through the taskworks CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from celery import Celery

ROOT = Path(__file__).resolve().parents[2]


class WorkerProcess:
    def __init__(self, app: Celery, env: dict[str, str], queues: list[str], *,
                 pool: str = "solo", concurrency: int = 1, log_dir: Path,
                 app_path: str = "tests.apps.sample:tw", celery_cli: bool = False,
                 args: Sequence[str] = ()) -> None:
        """``taskworks worker --app app_path [args]``; with ``celery_cli``, the project's own
        ``celery -A module worker`` instead (``app_path`` is then the module)."""
        self.app = app
        self.hostname = f"test-{uuid.uuid4().hex[:8]}@localhost"
        self.log_path = log_dir / f"{self.hostname}.log"
        if celery_cli:
            argv = [sys.executable, "-m", "celery", "-A", app_path, "worker",
                    "--queues", ",".join(queues), "--pool", pool,
                    "--concurrency", str(concurrency), "--hostname", self.hostname,
                    "--loglevel", "INFO"]
        else:
            argv = [sys.executable, "-m", "taskworks", "worker", "--app", app_path,
                    "--queues", ",".join(queues), "--pool", pool,
                    "--concurrency", str(concurrency), "--hostname", self.hostname, *args]
        #: a worker of the project's own app (kombu's transport) answers a ping from this
        #: app (ours) without a wake token: a consumer finds such a reply within a second,
        #: so its ping waits longer than one on our own transport needs
        self.ping_timeout = 1.5 if celery_cli else 0.5
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text()[-3000:]}")
            if self.app.control.ping(destination=[self.hostname], timeout=self.ping_timeout):
                return self
        raise RuntimeError(f"worker not ready in {timeout}s:\n{self.log_path.read_text()[-3000:]}")

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def kill(self) -> None:
        """SIGKILL the whole worker: no chance to ack, requeue or say goodbye."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> None:
        """Warm shutdown: finish the task in hand, then exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
