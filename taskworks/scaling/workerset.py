"""``taskworks worker``'s default: a fixed-size set of solo worker processes, supervised.

One solo process per core drains short tasks faster than one prefork worker with as many
children (1.5-1.8x measured on 2 cores, docs/benchmarks.md): no hand-off between a parent
and its children. What the prefork parent guaranteed holds another way:

- a killed process's messages come back within seconds: its heartbeat lapses
  (broker/heartbeat.py), and the set starts a new process;
- each process times its tasks itself (runtime/timelimits.py);
- recycling: past ``worker.max_memory_per_child`` (or ``solo_max_tasks``) a process
  shuts itself down warm and exits 0 (runtime/recycling.py, turned on in the processes'
  environment); the set starts a new one at once;
- a process that exits otherwise (a crash, SIGKILL, a hard time limit's exit 70) is
  started again after a backoff that doubles per crash in a row (scaling/restarts.py, the
  autoscaler's rule). Processes that keep failing at start end the set, with their status.

SIGTERM and SIGINT reach every process as SIGTERM (Celery's warm shutdown: the task in hand
finishes), SIGQUIT as SIGQUIT (cold), a second SIGINT as SIGQUIT (Ctrl-C twice, as for one
Celery worker). Each process runs in a session of its own, so a terminal's Ctrl-C reaches
this parent only and is forwarded warm; and each dies with the parent (PR_SET_PDEATHSIG on
Linux), so a SIGKILLed set leaves no process consuming.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

from taskworks.errors import WorkersFailing
from taskworks.logs import get_logger
from taskworks.runtime.recycling import SOLO_RECYCLING_ENV
from taskworks.runtime.timelimits import HARD_LIMIT_EXIT
from taskworks.scaling.restarts import RECYCLED, STEADY_AFTER, crash_backoff
from taskworks.settings import AutoscaleSettings

__all__ = ["FAILED_STARTS_TO_GIVE_UP", "FAILED_START_WITHIN", "WorkerSet", "default_size",
           "hostnames", "solo_worker_argv"]

log = get_logger("taskworks.worker")

#: a process exiting with an error this soon after its start failed to start ...
FAILED_START_WITHIN = 10.0
#: ... and after this many such failures in a row the set gives up
FAILED_STARTS_TO_GIVE_UP = 5
#: seconds between two looks at the processes and at the signals received
POLL_INTERVAL = 0.2
#: prctl(2) option: the signal a process gets when the thread that started it ends
_PR_SET_PDEATHSIG = 1


def default_size() -> int:
    """One process per core."""
    return max(1, os.cpu_count() or 1)


def hostnames(count: int, hostname: str | None) -> list[str]:
    """``name-1@host`` .. ``name-N@host`` from ``--hostname name@host``, read as Celery
    reads it (no ``@``: a host; the default name ``celery``, the default host this
    machine's). ``%h``, ``%n`` and ``%d`` are left for Celery to expand."""
    name, at, host = (hostname or "").partition("@")
    if not at:
        name, host = "", name
    name, host = name or "celery", host or socket.gethostname()
    return [f"{name}-{i}@{host}" for i in range(1, count + 1)]


def solo_worker_argv(app_spec: str | None, queues: Sequence[str], hostname: str) -> list[str]:
    """One process of the set: ``taskworks worker --pool solo``, which runs in-process."""
    app = ["--app", app_spec] if app_spec else []  # else TASKWORKS_APP, inherited, or none
    return [sys.executable, "-m", "taskworks", "worker", *app, "--queues", ",".join(queues),
            "--pool", "solo", "--concurrency", "1", "--hostname", hostname]


def _exit_status(returncode: int) -> int:
    """A Popen return code as a shell shows it: killed by signal N is 128 + N."""
    return returncode if returncode >= 0 else 128 - returncode


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when its parent ends
    (Linux); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not after
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: no signal would come
            os._exit(1)

    return preexec


@dataclass
class _Process:
    """One place of the set: its hostname stays, its process changes."""

    hostname: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes_in_a_row: int = 0
    failed_starts: int = 0
    #: monotonic time to start a new process at; None: none to start
    restart_at: float | None = None


class WorkerSet:
    """``argvs`` (one per process) run and supervised until a signal stops the set."""

    def __init__(self, argvs: dict[str, list[str]], restarts: AutoscaleSettings) -> None:
        self.places = [_Process(hostname, argv) for hostname, argv in argvs.items()]
        self.restarts = restarts
        # solo processes recycle themselves only where someone starts the next one: here
        # (an explicit setting in the environment is kept)
        self.env = {SOLO_RECYCLING_ENV: "true", **os.environ}
        self.stopping = False
        self.failure: WorkersFailing | None = None
        self._signals: list[int] = []
        self._interrupted = False
        self._preexec = _die_with_parent()

    @classmethod
    def solo(cls, app_spec: str | None, queues: Sequence[str], count: int,
             hostname: str | None, restarts: AutoscaleSettings) -> WorkerSet:
        return cls({name: solo_worker_argv(app_spec, queues, name)
                    for name in hostnames(count, hostname)}, restarts)

    def run(self) -> int:
        """Start every process and keep them running until SIGTERM, SIGINT or SIGQUIT;
        then wait for them all and return 0. Raises WorkersFailing (after stopping the
        others) when processes keep failing at start.

        Call it from the main thread: signal handlers live there, and PR_SET_PDEATHSIG
        fires when the *thread* that started a process ends."""
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)}
        try:
            for place in self.places:
                self._start(place)
            while self._tick(time.monotonic()):
                time.sleep(POLL_INTERVAL)
        finally:
            self._stop_leftovers()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.failure is not None:
            raise self.failure
        return 0

    # -- one turn of the loop ---------------------------------------------------------
    def _tick(self, now: float) -> bool:
        """Forward signals, reap, restart what is due; False once stopped and all exited."""
        while self._signals:
            self._forward(self._signals.pop(0))
        for place in self.places:
            self._reap(place, now)
        if self.stopping:
            return any(place.proc is not None for place in self.places)
        for place in self.places:
            if place.proc is None and place.restart_at is not None and now >= place.restart_at:
                self._start(place)
        return True

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # handled by the loop, never in the middle of a start; nothing here takes a lock
        # (a handler runs in the main thread, which may hold it)
        self._signals.append(signum)

    def _forward(self, received: int) -> None:
        cold = received == signal.SIGQUIT or (received == signal.SIGINT and self._interrupted)
        self._interrupted |= received == signal.SIGINT
        self._stop(signal.SIGQUIT if cold else signal.SIGTERM, signal.Signals(received).name)

    def _stop(self, forward: int, why: str) -> None:
        log.info("stopping worker processes", reason=why, signal=signal.Signals(forward).name,
                 processes=sum(1 for place in self.places if place.proc is not None))
        self.stopping = True
        for place in self.places:
            place.restart_at = None
            if place.proc is not None and place.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    place.proc.send_signal(forward)

    def _start(self, place: _Process) -> None:
        place.proc = subprocess.Popen(place.argv, env=self.env, start_new_session=True,
                                      preexec_fn=self._preexec)
        place.started_at = time.monotonic()
        place.restart_at = None
        log.info("worker process started", hostname=place.hostname, pid=place.proc.pid)

    def _reap(self, place: _Process, now: float) -> None:
        proc = place.proc
        if proc is None or proc.poll() is None:
            return
        place.proc = None
        code, lived = proc.returncode, now - place.started_at
        fields = {"hostname": place.hostname, "pid": proc.pid, "returncode": code}
        if self.stopping:
            log.info("worker process exited", **fields)
            return
        if code == RECYCLED:
            place.crashes_in_a_row = place.failed_starts = 0
            place.restart_at = now
            log.info("worker process recycled (exit 0); starting a new one", **fields)
            return
        place.crashes_in_a_row = 1 if lived >= STEADY_AFTER else place.crashes_in_a_row + 1
        # a hard time limit's exit means the process ran a task: it did start
        if lived < FAILED_START_WITHIN and code != HARD_LIMIT_EXIT:
            place.failed_starts += 1
        else:
            place.failed_starts = 0
        if place.failed_starts >= FAILED_STARTS_TO_GIVE_UP:
            self.failure = WorkersFailing(
                f"worker process {place.hostname} failed at start {place.failed_starts} "
                f"times in a row (exit status {_exit_status(code)}); its output above says "
                f"why", status=_exit_status(code))
            log.error("worker process keeps failing at start; stopping the set", **fields,
                      failed_starts=place.failed_starts)
            self._stop(signal.SIGTERM, "failing at start")
            return
        backoff = crash_backoff(self.restarts, place.crashes_in_a_row)
        place.restart_at = now + backoff
        log.error("worker process crashed; restarting after backoff", **fields,
                  backoff=backoff, crashes_in_a_row=place.crashes_in_a_row)

    def _stop_leftovers(self) -> None:
        """After an unexpected error in this process: a warm stop of what still runs."""
        running = [place.proc for place in self.places
                   if place.proc is not None and place.proc.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in running:
            proc.wait()
