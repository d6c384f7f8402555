"""A throwaway PostgreSQL server for tests: Debian's binaries, a fresh cluster in a temp dir.

As root, the cluster runs as the ``postgres`` user (PostgreSQL refuses to run as root).
``TASKWORKS_TEST_POSTGRES_URL`` points the tests at an existing server instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError(
        "PostgreSQL server binaries not found: 'make test' installs Debian's postgresql; "
        "or set TASKWORKS_TEST_POSTGRES_URL"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        self.bindir = _bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="tw-pg-"))
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, cwd="/")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/taskworks"

    def start(self) -> None:
        data = self.dir / "data"
        if not data.exists():
            self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres",
                      "--auth=trust", "-E", "UTF8", "--no-sync")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"),
                  "-w", "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off -c max_connections=200", "start")
        deadline = time.monotonic() + 20
        while True:
            done = subprocess.run(
                [*self.as_user, str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p",
                 str(self.port), "-U", "postgres", "taskworks"], capture_output=True, cwd="/")
            if done.returncode == 0 or b"already exists" in done.stderr:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(done.stderr.decode())
            time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run([*self.as_user, str(self.bindir / "pg_ctl"), "-D",
                        str(self.dir / "data"), "-m", mode, "stop"],
                       capture_output=True, cwd="/")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
