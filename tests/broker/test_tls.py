"""TLS to Redis, live: a real worker, taskworks' own clients and refusals, over rediss://.

The embedded valkey-server is built without TLS; Debian's redis-server is built with it
(`make system-deps` installs the package). Each test module run makes a throwaway CA and
a server certificate for 127.0.0.1 with the openssl command, and starts its own
redis-server on a free port: TLS only (``--port 0``), a password, no client certificates.
The package's own service is not used.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import select

from taskworks import Taskworks, keys
from taskworks.broker.urls import redis_client
from taskworks.resilience.breaker import BreakerState
from taskworks.scaling.supervisor import Supervisor
from taskworks.scheduling.leader import LeaderScheduler
from taskworks.settings import load_settings
from taskworks.store.tables import JournalEntry
from taskworks.tasks.health import probe_broker
from tests.api.server import ApiServer
from tests.support.postgres import free_port
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess

REDIS_SERVER = shutil.which("redis-server")
OPENSSL = shutil.which("openssl")

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None or OPENSSL is None,
    reason="needs Debian's redis-server (built with TLS) and openssl: `make system-deps` "
           "installs redis-server",
)


@dataclass(frozen=True)
class Pki:
    ca: Path
    #: a CA that signed nothing here: a client trusting only it must refuse the server
    other_ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    assert OPENSSL is not None
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(name: str, cwd: Path) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "1",
             "-subj", f"/CN=taskworks test {name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    _make_ca("ca", d)
    _make_ca("other-ca", d)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    # the address only: a client that dials "localhost" must see a host name mismatch
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n"
                                  "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "1",
             "-extfile", "server.ext", cwd=d)
    return Pki(ca=d / "ca.pem", other_ca=d / "other-ca.pem", cert=d / "server.pem",
               key=d / "server.key")


@dataclass(frozen=True)
class TlsServer:
    port: int
    password: str
    ca: Path

    def url(self, query: str = "", host: str = "127.0.0.1") -> str:
        return f"rediss://:{self.password}@{host}:{self.port}/0" + (f"?{query}" if query else "")

    @property
    def documented_url(self) -> str:
        """The URL docs/deploy.md gives, with this server's CA."""
        return self.url(f"ssl_cert_reqs=required&ssl_ca_certs={self.ca}")


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    assert REDIS_SERVER is not None
    d = tmp_path_factory.mktemp("redis-tls")
    server = TlsServer(port=free_port(), password=secrets.token_hex(16), ca=pki.ca)
    argv = [REDIS_SERVER, "--port", "0", "--tls-port", str(server.port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(pki.cert), "--tls-key-file", str(pki.key),
            "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", "no",
            "--requirepass", server.password, "--save", "", "--appendonly", "no",
            "--dir", str(d), "--logfile", str(d / "redis.log")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        def answers() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(d / 'redis.log').read_text()}")
            try:
                with redis_client(server.documented_url, socket_timeout=1) as client:
                    return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for(answers, timeout=20, interval=0.1, what="redis-server over TLS")
        yield server
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def tls(tls_server: TlsServer) -> TlsServer:
    """The TLS server, emptied."""
    with redis_client(tls_server.documented_url) as client:
        client.flushall()
    return tls_server


def journal(tw: Taskworks, task_id: str, final: str) -> list[JournalEntry]:
    def rows() -> list[JournalEntry] | None:
        with tw.store.session() as session:
            found = list(session.scalars(select(JournalEntry).where(
                JournalEntry.task_id == task_id).order_by(JournalEntry.id)))
        return found if found and found[-1].state == final else None

    return wait_for(rows, timeout=30, interval=0.1, what=f"journal rows of {task_id}")


def sender(url: str) -> Taskworks:
    """A Taskworks on ``url`` that knows the names of the sample tasks this module sends
    (their bodies run in the worker, which loads tests/apps/sample.py)."""
    tw = Taskworks(settings=load_settings(broker_url=url))
    for name in ("tests.echo", "tests.idem_work", "tests.limited", "tests.guarded"):
        tw.task(name=name)(_runs_in_the_worker)
    # the breaker as the sample registers it: this process opens it, the worker obeys
    tw.breakers.register("tests.guarded", failure_threshold=2, reset_timeout=2.0,
                         count=(ConnectionError,))
    return tw


def _runs_in_the_worker(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("sent only: the worker runs the sample's task")


def test_a_worker_and_every_taskworks_client_work_over_tls(
        sample: Any, tls: TlsServer, tmp_path: Path) -> None:
    # the worker gets the documented URL; this process the same without ssl_cert_reqs,
    # which the settings fill in (without it Celery's result backend refuses to start)
    client = sender(tls.url(f"ssl_ca_certs={tls.ca}"))
    assert client.settings.effective_broker_url.endswith("&ssl_cert_reqs=required")
    worker = WorkerProcess(client.app, {**os.environ, "TASKWORKS_BROKER_URL": tls.documented_url},
                           ["default"], pool="threads", concurrency=2, log_dir=tmp_path)
    data = redis_client(tls.documented_url, decode_responses=True)
    try:
        worker.wait_ready()

        # submit, run, result through the result backend, journal row
        result = client.submit("tests.echo", [7])
        assert result.get(timeout=30) == 7
        rows = journal(client, result.id, "success")
        assert [(r.name, r.state) for r in rows] == [("tests.echo", "success")]
        assert rows[0].hostname == worker.hostname

        # submit's dedupe key: a second submit sends nothing and returns the first task
        first = client.submit("tests.echo", [8], dedupe_key="tls-order-1")
        again = client.submit("tests.echo", [9], dedupe_key="tls-order-1")
        assert again.id == first.id
        assert first.get(timeout=30) == 8
        assert data.get(keys.dedupe("tls-order-1")) == first.id

        # an idempotent task: two submissions, one execution, one stored result
        one = client.submit("tests.idem_work", ["tls-idem"]).get(timeout=30)
        two = client.submit("tests.idem_work", ["tls-idem"]).get(timeout=30)
        assert one == two
        assert data.get("tls-idem:runs") == "1"

        # a cluster-wide rate limit: its Lua script runs on the TLS server
        assert client.submit("tests.limited", ["tls-limited"]).get(timeout=30) > 0
        assert data.llen("tls-limited:admitted") == 1

        # a breaker opened from this process defers the worker's task until it may probe
        breaker = client.breakers.get("tests.guarded")
        for _ in range(breaker.config.failure_threshold):
            with pytest.raises(ConnectionError):
                breaker.call(_down)
        assert breaker.status().state is BreakerState.OPEN
        guarded = client.submit("tests.guarded", ["tls-guarded"])
        assert guarded.get(timeout=30) == 1
        states = [r.state for r in journal(client, guarded.id, "success")]
        assert states[0] == "deferred"  # the worker saw the open breaker, over TLS
        assert client.breakers.show("tests.guarded").state is BreakerState.CLOSED
    finally:
        worker.stop()

    # the API's client (/api/health pings the broker), the doctor's probe, the
    # supervisor's queue depths, beat's leader lease
    api = ApiServer(client).start()
    try:
        with api.client() as http:
            health = http.get("/api/health")
    finally:
        api.stop()
    assert health.status_code == 200, health.text
    assert health.json()["broker"] is True
    assert probe_broker(client.app.conf.broker_url)["ok"] is True
    client.app.send_task("tests.record", ["waiting"], queue="cpu_intensive")  # no consumer
    observed = Supervisor(settings=client.settings).observe()
    assert observed.groups["cpu"].backlog_by_queue == {"cpu_intensive": 1}
    scheduler = LeaderScheduler(app=client.app, lazy=True)
    assert scheduler.lease.hold() is True
    assert data.get(keys.beat_leader(client.app.main or "default")) == scheduler.lease.token
    scheduler.lease.release()


def _down() -> None:
    raise ConnectionError("down")


@pytest.mark.parametrize("query", [
    "ssl_ca_certs={other_ca}",  # trusts another CA only
    "",  # trusts the system's CAs: no ssl_cert_reqs, which kombu alone took as "none"
], ids=["other-ca", "system-cas"])
def test_a_client_that_does_not_trust_the_ca_is_refused(
        tls: TlsServer, pki: Pki, query: str) -> None:
    url = tls.url(query.format(other_ca=pki.other_ca))
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis_client(url).ping()
    # the broker connection of an app built from these settings (kombu)
    app = Taskworks(settings=load_settings(broker_url=url)).app
    with app.connection_for_write() as conn, pytest.raises(Exception) as refused:
        conn.ensure_connection(max_retries=0)
    assert "certificate verify failed" in str(refused.value)


def test_the_host_name_must_match_the_certificate(tls: TlsServer) -> None:
    url = tls.url(f"ssl_ca_certs={tls.ca}", host="localhost")  # the certificate: 127.0.0.1
    with pytest.raises(redis.ConnectionError, match="Hostname mismatch"):
        redis_client(url).ping()


def test_the_refusals_are_verification_not_a_broken_server(tls: TlsServer) -> None:
    # the same server and kombu path connect with the right CA, or when told not to verify
    for query in (f"ssl_ca_certs={tls.ca}", "ssl_cert_reqs=none"):
        app = Taskworks(settings=load_settings(broker_url=tls.url(query))).app
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=0)
            assert conn.connected
