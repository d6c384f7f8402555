"""The local stack behind ``taskworks up``: broker, autoscaled worker groups, beat.

Children run in sessions of their own, so a Ctrl-C reaches only this process; it then
asks every child for a warm shutdown (SIGTERM: finish the task in hand, then exit) and
stops the embedded broker last, and only if it started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery import Celery

from taskworks.broker.embedded import EmbeddedBroker, RunningServer
from taskworks.errors import BrokerError
from taskworks.logs import get_logger
from taskworks.scaling.policy import Decision, Observations
from taskworks.scaling.supervisor import Supervisor
from taskworks.settings import Settings

__all__ = ["Stack", "embedded_broker", "require_broker"]

log = get_logger("taskworks.stack")


def embedded_broker(settings: Settings) -> EmbeddedBroker:
    return EmbeddedBroker(
        settings.data_dir, host=settings.embedded_host, port=settings.embedded_port,
        fsync=settings.embedded_fsync,
    )


def require_broker(settings: Settings) -> None:
    """Workers and beat need a broker; with the embedded one, say how to start it."""
    if settings.embedded and embedded_broker(settings).running() is None:
        raise BrokerError(
            f"the embedded broker of {settings.data_dir} is not running: start it with "
            f"'taskworks broker' or run everything with 'taskworks up'"
        )


@dataclass
class Stack:
    settings: Settings
    app_spec: str | None = None
    with_beat: bool = True
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    broker: EmbeddedBroker | None = None
    started_broker: bool = False
    #: where children write their output; None: this terminal
    log_dir: Path | None = None
    #: hooks for the supervisor's decisions and status (scaling/record.py)
    on_change: Callable[[Decision, Observations], None] | None = None
    on_status: Callable[[dict[str, Any]], None] | None = None
    supervisor: Supervisor | None = None
    _supervising: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    #: set by the signal handlers of catch_signals; None: they are not installed yet
    _stop_requested: bool | None = None

    def start(self) -> RunningServer | None:
        server = None
        if self.settings.embedded:
            self.broker = embedded_broker(self.settings)
            server, self.started_broker = self.broker.start()
            log.info("broker", url=server.url, started=self.started_broker, pid=server.pid)
        env = dict(os.environ)
        if self.app_spec:
            env["TASKWORKS_APP"] = self.app_spec
        # the workers of every group are the supervisor's: it starts each group at its
        # minimum, then scales on the backlog (scaling/supervisor.py)
        self.supervisor = Supervisor(self.settings, app_spec=self.app_spec,
                                     log_dir=self.log_dir, on_change=self.on_change,
                                     on_status=self.on_status)
        self.supervisor.start()
        self._supervising = threading.Thread(target=self.supervisor.loop,
                                             args=(self._stopping,), name="autoscale",
                                             daemon=True)
        self._supervising.start()
        if self.with_beat:
            self._spawn("beat", [sys.executable, "-m", "taskworks", "beat"], env)
        return server

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        output = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            output = (self.log_dir / f"{name.replace(':', '-')}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            argv, env=env, start_new_session=True, stdout=output, stderr=output
        )
        if output is not None:
            output.close()  # the child holds its own descriptor
        log.info("started", process=name, pid=self.processes[name].pid)

    def wait_ready(self, app: Celery, timeout: float = 60.0) -> None:
        """Wait until every worker the supervisor started answers a ping."""
        assert self.supervisor is not None
        host = socket.gethostname()
        expected = {slot.hostname.replace("%h", host) for slot in self.supervisor.slots}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = app.control.ping(destination=sorted(expected), timeout=0.5) or []
            if expected <= {name for reply in replies for name in reply}:
                return
            if self.exited():
                raise BrokerError(f"a process exited during start-up: {self.exited()}")
        raise BrokerError(f"workers not ready after {timeout}s: expected {sorted(expected)}")

    def exited(self) -> dict[str, int]:
        found = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
        if self.supervisor is not None:
            found.update({s.hostname: s.proc.returncode for s in self.supervisor.slots
                          if not s.alive and not s.draining})
        return found

    def stop(self, timeout: float = 60.0) -> None:
        self._stopping.set()
        if self._supervising is not None:
            self._supervising.join(timeout)
        if self.supervisor is not None:
            self.supervisor.stop(timeout)
        for proc in self.processes.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, proc in self.processes.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("did not stop in time, killing", process=name)
                proc.kill()
                proc.wait()
        if self.broker is not None and self.started_broker:
            self.broker.stop()
            log.info("broker stopped")

    def catch_signals(self) -> None:
        """From now on SIGINT and SIGTERM ask for a stop (``wait_until_signalled`` ends).
        Call it before anything tells the user the stack runs: a stop sent right after
        the banner must find these handlers, not Python's default (seen: a hung stop)."""
        self._stop_requested = False

        def request_stop(_signum: int, _frame: object) -> None:
            self._stop_requested = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)

    def wait_until_signalled(self) -> None:
        """Block until SIGINT or SIGTERM; report children that exit meanwhile."""
        if self._stop_requested is None:
            self.catch_signals()
        reported: set[str] = set()
        while not self._stop_requested:
            for name, code in self.exited().items():
                if name not in reported:
                    log.error("process exited", process=name, returncode=code)
                    reported.add(name)
            time.sleep(0.2)
