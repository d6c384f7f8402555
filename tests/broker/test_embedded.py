"""The embedded valkey-server: start, reuse, stop, AOF persistence, port conflicts, loopback."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from taskworks import Taskworks, load_settings
from taskworks.broker.embedded import EmbeddedBroker, port_is_free
from taskworks.errors import BrokerError, PortInUse
from tests.support.postgres import free_port

#: kombu's Redis transport keeps priority N (broker scale, 0 served first) of queue Q in
#: "Q\x06\x16N", and priority 0 in "Q" itself
PRIORITY_SEP = "\x06\x16"


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def broker(tmp_path: Path, port: int) -> Iterator[EmbeddedBroker]:
    server = EmbeddedBroker(tmp_path, port=port)
    yield server
    EmbeddedBroker(tmp_path, port=port).stop()
    server.stop()


def client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2,
                       decode_responses=True)


def refused(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP connection to host:port is refused (nothing listens there)."""
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((host, port)) == errno.ECONNREFUSED


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie nobody reaped yet has exited too)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_start_answers_ping_and_records_pid_and_port(
    broker: EmbeddedBroker, tmp_path: Path, port: int
) -> None:
    server, started = broker.start()
    assert started is True
    assert (server.host, server.port) == ("127.0.0.1", port)
    assert server.url == f"redis://127.0.0.1:{port}/0"
    with client(port) as conn:
        assert conn.ping() is True
        assert conn.info("server")["process_id"] == server.pid
        assert conn.config_get("appendonly") == {"appendonly": "yes"}
        assert conn.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert conn.config_get("dir") == {"dir": str((tmp_path / "valkey").resolve())}
    assert (tmp_path / "valkey" / "valkey.pid").read_text() == str(server.pid)
    assert (tmp_path / "valkey" / "valkey.port").read_text() == str(port)
    assert psutil.Process(server.pid).name().startswith("valkey-server")
    assert broker.running() == server


def test_fsync_always_is_passed_to_the_server(tmp_path: Path, port: int) -> None:
    broker = EmbeddedBroker(tmp_path, port=port, fsync="always")
    try:
        broker.start()
        with client(port) as conn:
            assert conn.config_get("appendfsync") == {"appendfsync": "always"}
    finally:
        broker.stop()


def test_second_start_reuses_the_running_server(
    broker: EmbeddedBroker, tmp_path: Path, port: int
) -> None:
    first, started = broker.start()
    assert started is True
    again, started_again = EmbeddedBroker(tmp_path, port=port).start()
    assert started_again is False
    assert again.pid == first.pid
    assert again.port == port
    on_port = [p.pid for p in psutil.Process().children()
               if p.name().startswith("valkey-server") and f":{port}" in " ".join(p.cmdline())]
    assert on_port == [first.pid]


def test_stop_removes_the_files_and_ends_the_process(
    broker: EmbeddedBroker, tmp_path: Path, port: int
) -> None:
    server, _ = broker.start()
    assert broker.stop() is True
    assert not (tmp_path / "valkey" / "valkey.pid").exists()
    assert not (tmp_path / "valkey" / "valkey.port").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)
    assert refused(port)
    assert port_is_free("127.0.0.1", port)
    assert broker.running() is None
    assert broker.stop() is False  # nothing left to stop


def test_stop_from_another_process_ends_the_server(tmp_path: Path, port: int) -> None:
    # the CLI that started the server is not the one that stops it
    code = ("import sys; from taskworks.broker.embedded import EmbeddedBroker; "
            "s, started = EmbeddedBroker(sys.argv[1], port=int(sys.argv[2])).start(); "
            "print(s.pid, started)")
    # stdout to a file: the server inherits it and would hold a pipe open
    out_path = tmp_path / "start.out"
    with out_path.open("w") as out:
        subprocess.run([sys.executable, "-c", code, str(tmp_path), str(port)],
                       stdout=out, check=True, timeout=30)
    pid, started = out_path.read_text().split()
    try:
        assert started == "True"
        assert EmbeddedBroker(tmp_path, port=port).running() is not None
        assert EmbeddedBroker(tmp_path, port=port).stop() is True
        assert gone(int(pid))
        assert port_is_free("127.0.0.1", port)
        assert not (tmp_path / "valkey" / "valkey.pid").exists()
    finally:
        if not gone(int(pid)):
            os.kill(int(pid), 9)


def test_stale_pid_file_does_not_block_a_start(
    broker: EmbeddedBroker, tmp_path: Path, port: int
) -> None:
    # a pid that is alive (this very process) but serves nothing on the recorded port
    (tmp_path / "valkey").mkdir()
    (tmp_path / "valkey" / "valkey.pid").write_text(str(os.getpid()))
    (tmp_path / "valkey" / "valkey.port").write_text(str(free_port()))
    server, started = broker.start()
    assert started is True
    assert server.pid != os.getpid()
    assert (tmp_path / "valkey" / "valkey.pid").read_text() == str(server.pid)
    assert (tmp_path / "valkey" / "valkey.port").read_text() == str(port)


def test_probe_of_a_dead_port_tries_once(broker: EmbeddedBroker) -> None:
    # redis-py retries 3 times with backoff by default; a liveness probe must not
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = 0

    def accept_and_drop() -> None:
        nonlocal accepted
        listener.settimeout(3)
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                accepted += 1
                conn.close()

    thread = threading.Thread(target=accept_and_drop)
    thread.start()
    assert broker._answers(listener.getsockname()[1]) is False
    listener.close()
    thread.join()
    assert accepted == 1


def test_queued_messages_survive_a_restart(
    broker: EmbeddedBroker, tmp_path: Path, port: int
) -> None:
    server, _ = broker.start()
    tw = Taskworks(settings=load_settings(
        broker_url=server.url, database_url=f"sqlite:///{tmp_path / 'store.db'}"))

    @tw.task(name="tests.embedded.noop")
    def noop(n: int) -> int:
        return n

    urgent = [tw.submit("tests.embedded.noop", [i], priority=9).id for i in range(5)]
    normal = [tw.submit("tests.embedded.noop", [i], queue="io_intensive").id for i in range(3)]
    tw.app.pool.force_close_all()
    normal_key = f"io_intensive{PRIORITY_SEP}4"  # default priority 5 is kombu's 4
    with client(port) as conn:
        assert conn.llen("default") == 5
        assert conn.llen(normal_key) == 3

    assert broker.stop() is True
    assert refused(port)

    restarted, started = EmbeddedBroker(tmp_path, port=port).start()
    assert started is True
    assert restarted.pid != server.pid
    with client(port) as conn:
        queued = [json.loads(m)["headers"]["id"] for m in conn.lrange("default", 0, -1)]
        assert sorted(queued) == sorted(urgent)
        queued = [json.loads(m)["headers"]["id"] for m in conn.lrange(normal_key, 0, -1)]
        assert sorted(queued) == sorted(normal)


def test_port_in_use_by_another_program(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = int(other.getsockname()[1])
        broker = EmbeddedBroker(tmp_path, port=taken)
        try:
            with pytest.raises(PortInUse) as info:
                broker.start()
        finally:
            broker.stop()
    assert isinstance(info.value, BrokerError)
    assert f"port {taken} on 127.0.0.1 is in use" in str(info.value)
    assert "TASKWORKS_EMBEDDED_PORT" in str(info.value)
    assert not (tmp_path / "valkey" / "valkey.pid").exists()


def test_bound_to_loopback_only(broker: EmbeddedBroker, port: int) -> None:
    server, _ = broker.start()
    with client(port) as conn:
        assert conn.config_get("bind") == {"bind": "127.0.0.1"}
        assert conn.config_get("protected-mode") == {"protected-mode": "yes"}
    listening = [c.laddr for c in psutil.Process(server.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", port)]
    # another loopback address reaches a server bound to 0.0.0.0, not one bound to 127.0.0.1
    assert refused(port, "127.0.0.2")
    assert not refused(port, "127.0.0.1")
