"""A small private network on this machine: network namespaces joined by veth pairs on a
bridge, and real processes (Valkey, PostgreSQL, taskworks workers) run inside them with
``ip netns exec``.

Every name is ``PREFIX`` + the pid of the pytest process that made it + a suffix, and
every network has its own /24, so reruns and parallel pytest-xdist processes never
collide. ``Network.destroy`` kills what runs inside and removes namespaces and bridge; it
is safe to call on a half-built network. A process that was SIGKILLed never ran it:
``remove_stale`` removes what such a process left, recognised by the prefix and a pid that
no longer runs, and nothing else.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from taskworks.broker.embedded import pid_alive
from tests.support.postgres import _bindir
from tests.support.workers import ROOT

#: each network is 10.251.<k>.0/24: the bridge is .1, the hosts .2, .3, ...
NET_PREFIX = "10.251"
#: the start of every namespace and link name made here, followed by the owner's pid and
#: a suffix (twmh<pid>a, twmh<pid>ao, twmh<pid>br): at most 4 + 7 + 2 = 13 characters,
#: within the kernel's 15 for a link name
PREFIX = "twmh"
OWNED = re.compile(rf"{PREFIX}(\d+)[a-z]+")
#: the work directory (Valkey's AOF, PostgreSQL's cluster) of the same process
WORK_DIR_PREFIX = "tw-multihost-"
OWNED_DIR = re.compile(rf"{WORK_DIR_PREFIX}(\d+)-.+")


def unavailable() -> str | None:
    """Why this machine cannot build namespaces, or None when it can."""
    if os.geteuid() != 0:
        return "multi-host tests need root (ip netns, veth, bridge)"
    if shutil.which("ip") is None:
        return "multi-host tests need the 'ip' command (iproute2)"
    probe = f"{PREFIX}{os.getpid()}probe"
    done = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"'ip netns add' failed: {done.stderr.strip() or done.returncode}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done


def _stale_owner(pattern: re.Pattern[str], name: str, also: int | None) -> bool:
    """Whether ``name`` was made here by a process that no longer runs (or by ``also``)."""
    owned = pattern.fullmatch(name)
    if owned is None:
        return False  # not ours: never touched
    owner = int(owned.group(1))
    return owner == also or not pid_alive(owner)


def namespaces() -> list[str]:
    # "name (id: 3)" or "name"
    return [line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line]


def links() -> list[str]:
    # "7: name@if6: <BROADCAST,...> ...": the name, without the peer after '@'
    return [line.split(": ", 2)[1].split("@", 1)[0]
            for line in _ip("-o", "link", "show").stdout.splitlines() if line]


@contextlib.contextmanager
def sweep_lock() -> Iterator[None]:
    """Held while sweeping: two pytest-xdist processes sweep one after the other, and a
    test that builds a leftover on purpose is not swept half-built."""
    with (Path(tempfile.gettempdir()) / f"{PREFIX}-sweep.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def remove_stale(*, also: int | None = None) -> list[str]:
    """Remove what an earlier, killed run left behind: every namespace, link (bridge,
    veth) and work directory whose name is ours and whose owner pid no longer runs, with
    the processes still inside those namespaces (its Valkey, PostgreSQL, workers). ``also``
    names one more owner to remove: the caller's own pid, before it builds anything (a
    dead process may have had the same pid). A live owner's (the other pytest-xdist
    process's) and any name without the prefix are left alone. Returns what was removed.
    """
    with sweep_lock():
        return _remove_stale(also)


def _remove_stale(also: int | None) -> list[str]:
    removed: list[str] = []
    for netns in namespaces():
        if not _stale_owner(OWNED, netns, also):
            continue
        for pid in _ip("netns", "pids", netns, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        _ip("netns", "del", netns, check=False)
        removed.append(netns)
    # the veth ends left on the bridge side and the bridges (deleting one end of a veth
    # pair deletes both)
    for link in links():
        if _stale_owner(OWNED, link, also):
            _ip("link", "del", link, check=False)
            removed.append(link)
    temp = Path(tempfile.gettempdir())
    for path in temp.glob(f"{WORK_DIR_PREFIX}*"):
        if path.is_dir() and _stale_owner(OWNED_DIR, path.name, also):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


def work_dir() -> Path:
    """A fresh work directory named after this process, for ``remove_stale`` to find."""
    work = Path(tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{os.getpid()}-"))
    work.chmod(0o755)  # PostgreSQL runs as its own user and must reach its directory
    return work


def free_subnet(start: int) -> int:
    """The third octet of a 10.251.k.0/24 no interface of this machine uses yet."""
    used = _ip("-4", "-o", "addr", "show").stdout
    for step in range(250):
        k = 1 + (start + step) % 250
        if f" {NET_PREFIX}.{k}." not in used:
            return k
    raise RuntimeError(f"no free {NET_PREFIX}.k.0/24 subnet")


@dataclass
class Host:
    name: str       # short: a, b, c
    netns: str      # the namespace
    address: str    # its address on the bridge
    bridge_end: str  # the veth end enslaved to the bridge (in the root namespace)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.argv(*argv), capture_output=True, text=True, cwd="/")
        if check and done.returncode != 0:
            raise RuntimeError(f"{self.netns}: {' '.join(argv)}: {done.stderr.strip()}")
        return done

    def spawn(self, argv: list[str], *, log: Path, env: dict[str, str] | None = None,
              cwd: Path = ROOT) -> subprocess.Popen[bytes]:
        """Start a process inside the namespace (``ip netns exec`` execs it: same pid),
        in a session of its own so that its whole group can be killed."""
        with log.open("ab") as out:
            proc = subprocess.Popen(self.argv(*argv), env=env, cwd=cwd, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.processes.append(proc)
        return proc

    def link(self, up: bool) -> None:
        """Pull (or plug back) this host's cable at the switch: its packets vanish
        silently, as in a real partition (no error reaches its sockets at once)."""
        _ip("link", "set", self.bridge_end, "up" if up else "down")


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL,
               timeout: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)


class Network:
    """A bridge in the root namespace (the test process reaches every host through it,
    like an operator's machine on the same switch) and one namespace per host."""

    def __init__(self, names: list[str], *, subnet: int) -> None:
        # this process's pid in every name: remove_stale tells a dead run's leftovers by it
        self.tag = f"{PREFIX}{os.getpid()}"
        self.bridge = f"{self.tag}br"
        net = ipaddress.ip_network(f"{NET_PREFIX}.{subnet}.0/24")
        self.gateway = str(net[1])
        self.hosts: dict[str, Host] = {}
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for i, name in enumerate(names):
                self._add_host(name, str(net[2 + i]))
        except BaseException:
            self.destroy()
            raise

    def _add_host(self, name: str, address: str) -> None:
        netns = f"{self.tag}{name}"
        outer, inner = f"{self.tag}{name}o", f"{self.tag}{name}i"
        if not re.fullmatch("[a-z]", name):  # keeps every name parseable and <= 15 long
            raise ValueError(f"host name: got {name!r}, expected one lowercase letter")
        _ip("netns", "add", netns)
        host = self.hosts[name] = Host(name, netns, address, outer)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", netns)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        host.run("ip", "link", "set", "lo", "up")
        host.run("ip", "link", "set", inner, "name", "eth0")
        host.run("ip", "addr", "add", f"{address}/24", "dev", "eth0")
        host.run("ip", "link", "set", "eth0", "up")

    def destroy(self) -> None:
        for host in self.hosts.values():
            for proc in host.processes:
                kill_group(proc)
            # anything else still inside (pg_ctl's daemonized postmaster) dies with it
            pids = _ip("netns", "pids", host.netns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            # the namespace may outlive its deletion a while (dying processes): remove
            # the veth pair explicitly so nothing is left on the bridge side
            _ip("link", "del", host.bridge_end, check=False)
            _ip("netns", "del", host.netns, check=False)
        _ip("link", "del", self.bridge, check=False)


# -- services on host A ------------------------------------------------------------------
class Valkey:
    """valkey-server bound to the host's own address, AOF fsynced on every write, so a
    SIGKILL loses nothing that was acknowledged."""

    PORT = 6379  # every namespace has its own ports

    def __init__(self, host: Host, data_dir: Path) -> None:
        from taskworks.broker.embedded import server_binary

        self.host = host
        self.dir = data_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.argv = [str(server_binary()), "--bind", host.address, "--port", str(self.PORT),
                     "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always",
                     "--save", "", "--protected-mode", "no", "--daemonize", "no"]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host.address}:{self.PORT}/0"

    def start(self, timeout: float = 15.0) -> None:
        import redis

        self.proc = self.host.spawn(self.argv, log=self.dir / "valkey.log", cwd=self.dir)
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"valkey exited: {self._log_tail()}")
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"valkey not answering: {self._log_tail()}")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        kill_group(self.proc, sig)

    def _log_tail(self) -> str:
        return (self.dir / "valkey.log").read_text(errors="replace")[-2000:]


class Postgres:
    """A fresh PostgreSQL cluster listening on the host's address (run as ``postgres``)."""

    PORT = 5432

    def __init__(self, host: Host, data_dir: Path) -> None:
        self.host = host
        self.bindir = _bindir()
        self.dir = data_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        user = pwd.getpwnam("postgres")
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.options = (f"-p {self.PORT} -k {self.dir} -c listen_addresses={host.address} "
                        "-c fsync=off -c max_connections=200")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host.address}:{self.PORT}/taskworks"

    def _ctl(self, *args: str) -> None:
        self.host.run("runuser", "-u", "postgres", "--", str(self.bindir / "pg_ctl"),
                      "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), *args)

    def start(self) -> None:
        if not (self.dir / "data").exists():
            self.host.run("runuser", "-u", "postgres", "--", str(self.bindir / "initdb"),
                          "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust",
                          "-E", "UTF8", "--no-sync")
            # trust the private network only: the hosts and the bridge
            with (self.dir / "data" / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {NET_PREFIX}.0.0/16 trust\n")
        self._ctl("-w", "-o", self.options, "start")
        self.host.run("runuser", "-u", "postgres", "--", str(self.bindir / "createdb"), "-h",
                      self.host.address, "-p", str(self.PORT), "-U", "postgres", "taskworks")

    def restart(self, downtime: float = 0.0) -> None:
        """``pg_ctl restart -m fast``: every client connection is cut; with ``downtime``,
        the server stays down that long in between (clients meet refused connections)."""
        if not downtime:
            self._ctl("-w", "-m", "fast", "-o", self.options, "restart")
            return
        self._ctl("-w", "-m", "fast", "stop")
        time.sleep(downtime)
        self._ctl("-w", "-o", self.options, "start")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")


# -- taskworks workers -------------------------------------------------------------------
class Worker:
    """``taskworks worker`` inside a host's namespace, with a Celery hostname of its own."""

    def __init__(self, host: Host, env: dict[str, str], queues: list[str], log_dir: Path,
                 *, concurrency: int | None = None, app: str = "tests.multihost.app:tw"
                 ) -> None:
        self.host = host
        self.hostname = f"{host.name}@host{host.name.upper()}"
        self.log_path = log_dir / f"worker-{host.name}-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "taskworks", "worker", "--app", app,
                "--group", "multihost", "--queues", ",".join(queues),
                "--hostname", self.hostname]
        if concurrency is not None:
            argv += ["--concurrency", str(concurrency)]
        self.proc = host.spawn(argv, log=self.log_path, env=env)

    def wait_ready(self, control_app: object, timeout: float = 40.0) -> Worker:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.hostname} exited early:\n{self.log_tail()}")
            if control_app.control.ping(destination=[self.hostname],  # type: ignore[attr-defined]
                                        timeout=0.5):
                return self
        raise RuntimeError(f"worker {self.hostname} not ready in {timeout}s:\n"
                           f"{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        kill_group(self.proc, signal.SIGKILL)

    def stop(self, timeout: float = 15.0) -> None:
        """Warm shutdown (the journal flushes its buffer); SIGKILL if it hangs."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
