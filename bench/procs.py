"""Worker processes of a side: started, waited for, measured (CPU) and stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from bench.core import ROOT


class Workers:
    """One or more worker commands, each with its whole process tree."""

    def __init__(self, name: str, commands: list[list[str]], env: dict[str, str]) -> None:
        self.name = name
        self.log = Path(tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")[1])
        self._log = self.log.open("wb")
        self.procs = [
            subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                             start_new_session=True)
            for argv in commands
        ]
        self._psutil = [psutil.Process(p.pid) for p in self.procs]

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} worker exited with {proc.returncode}:\n"
                                   f"{self.output_tail()}")

    def output_tail(self, chars: int = 3000) -> str:
        """The end of what the side's processes wrote (their log is deleted at stop)."""
        self._log.flush()
        return self.log.read_text(errors="replace")[-chars:]

    def cpu_seconds(self) -> float:
        """CPU time of every process of the side, the finished children included."""
        total = 0.0
        for root in self._psutil:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = root.cpu_times()
                # children_*: processes the root reaped (recycled pool children)
                total += t.user + t.system + t.children_user + t.children_system
                for child in root.children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        c = child.cpu_times()
                        total += c.user + c.system
        return total

    def stop(self, timeout: float = 20.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._log.close()
        self.log.unlink(missing_ok=True)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def bin_path(name: str) -> str:
    """A console script installed beside this interpreter (celery, dramatiq, rq)."""
    return str(Path(sys.executable).parent / name)
