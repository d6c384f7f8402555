"""``taskworks.http_call`` with a real worker against a real local HTTP server (a thread of
this process, reached by the worker over loopback). Loopback is not a public address:
the worker these tests share is started with ``http_call.allow_private_networks``; the
refusals at the end run workers without it."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from taskworks.errors import HttpRejected, HttpUnavailable, InvalidInput
from taskworks.resilience.breaker import BreakerState
from taskworks.settings import HttpCallSettings
from taskworks.store.tables import JournalEntry
from taskworks.tasks.http_call import HTTP_CALL, http_request, retry_after_seconds
from taskworks.tasks.http_guard import non_public
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess


@dataclass
class Answer:
    status: int = 200
    body: Any = field(default_factory=lambda: {"ok": True})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class Server:
    """Answers each path from a plan, in order; the last answer repeats. Records hits."""

    def __init__(self) -> None:
        self.plans: dict[str, list[Answer]] = {}
        self.hits: dict[str, list[float]] = {}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server.lock:
                    server.hits.setdefault(self.path, []).append(time.monotonic())
                    plan = server.plans.get(self.path) or [Answer(404, "no such path")]
                    answer = plan.pop(0) if len(plan) > 1 else plan[0]
                time.sleep(answer.delay)
                raw = answer.body if isinstance(answer.body, str) else json.dumps(answer.body)
                kind = "text/plain" if isinstance(answer.body, str) else "application/json"
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", kind)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(raw.encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def plan(self, path: str, *answers: Answer) -> str:
        with self.lock:
            self.plans[path] = list(answers)
        return self.url(path)

    def count(self, path: str) -> int:
        with self.lock:
            return len(self.hits.get(path, []))


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


#: the worker environment that lets http_call reach the tests' loopback servers
ALLOW_PRIVATE = {"TASKWORKS_HTTP_CALL__ALLOW_PRIVATE_NETWORKS": "true"}


@pytest.fixture
def worker(tw: Any, start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker(env=ALLOW_PRIVATE)


def test_500_is_retried_then_fails_with_status_and_excerpt(
        tw: Any, server: Server, worker: WorkerProcess) -> None:
    url = server.plan("/broken", Answer(500, "database on fire"))
    with pytest.raises(HttpUnavailable) as failed:
        tw.submit(HTTP_CALL, [url]).get(timeout=30)
    assert failed.value.status == 500
    assert "database on fire" in str(failed.value)
    assert server.count("/broken") == 3  # max_retries=2 in the tests' policy


def test_503_with_retry_after_is_honoured(tw: Any, server: Server,
                                          worker: WorkerProcess) -> None:
    url = server.plan("/busy", Answer(503, "maintenance", {"Retry-After": "1"}),
                      Answer(200, {"value": 42}))
    answer = tw.submit(HTTP_CALL, [url]).get(timeout=30)
    assert answer["status"] == 200
    assert answer["json"] == {"value": 42}
    assert answer["headers"]["content-type"] == "application/json"
    first, second = server.hits["/busy"]
    assert second - first >= 0.9  # the policy alone would have waited 0.05 s


def test_429_is_retried(tw: Any, server: Server, worker: WorkerProcess) -> None:
    url = server.plan("/limited", Answer(429, "slow down", {"Retry-After": "0"}),
                      Answer(200, "plain words"))
    answer = tw.submit(HTTP_CALL, [url]).get(timeout=30)
    assert answer["text"] == "plain words"
    assert "json" not in answer
    assert server.count("/limited") == 2


def test_404_fails_at_once_never_retried(tw: Any, server: Server,
                                         worker: WorkerProcess) -> None:
    url = server.plan("/missing", Answer(404, "no order 17 here"))
    result = tw.submit(HTTP_CALL, [url])
    with pytest.raises(HttpRejected) as failed:
        result.get(timeout=30)
    assert failed.value.status == 404
    assert str(failed.value) == f"GET {url}: HTTP 404: no order 17 here"
    assert server.count("/missing") == 1
    # a 4xx means the host answered: it does not count against the host's breaker
    status = tw.breakers.show(f"http:127.0.0.1:{server.port}")
    assert (status.failures, status.successes) == (0, 1)


def test_a_slow_answer_times_out_and_is_retried(tw: Any, server: Server,
                                                worker: WorkerProcess) -> None:
    url = server.plan("/slow", Answer(200, {"late": True}, delay=3.0), Answer(200, {"n": 2}))
    result = tw.submit(HTTP_CALL, [url], {"timeout": 0.5})
    assert result.get(timeout=30)["json"] == {"n": 2}
    assert server.count("/slow") == 2


def test_progress_is_published_while_waiting(tw: Any, server: Server,
                                             worker: WorkerProcess) -> None:
    url = server.plan("/slowly", Answer(200, {"done": True}, delay=1.5))
    result = tw.submit(HTTP_CALL, [url])
    seen = wait_for(lambda: (p := tw.progress(result.id)).state == "PROGRESS" and p,
                    timeout=20, what="PROGRESS")
    assert seen.status == f"GET {url}"
    assert (seen.current, seen.total) == (0, 2)
    assert result.get(timeout=30)["json"] == {"done": True}


def test_the_host_breaker_opens_then_defers_calls_until_the_host_recovers(
        tw: Any, server: Server, worker: WorkerProcess) -> None:
    name = f"http:127.0.0.1:{server.port}"
    down = server.plan("/down", Answer(502, "bad gateway"))
    with pytest.raises(HttpUnavailable):  # 3 attempts: the host breaker's threshold
        tw.submit(HTTP_CALL, [down]).get(timeout=30)
    assert tw.breakers.show(name).state is BreakerState.OPEN
    server.plan("/down", Answer(200, {"back": True}))
    result = tw.submit(HTTP_CALL, [down])

    def journaled() -> list[str]:
        with tw.store.session() as session:
            return list(session.scalars(select(JournalEntry.state).where(
                JournalEntry.task_id == result.id)))

    wait_for(lambda: "deferred" in journaled(), timeout=20, what="a deferral")
    assert result.get(timeout=30)["json"] == {"back": True}
    assert server.count("/down") == 4  # 3 failures, then only the successful probe
    assert tw.breakers.show(name).state is BreakerState.CLOSED


def test_breaker_false_goes_without(tw: Any, server: Server, worker: WorkerProcess) -> None:
    url = server.plan("/plain", Answer(200, {"x": 1}))
    assert tw.submit(HTTP_CALL, [url], {"breaker": False}).get(timeout=30)["json"] == {"x": 1}
    assert f"http:127.0.0.1:{server.port}" not in tw.breakers.names()


# -- without a worker ---------------------------------------------------------------------
def test_http_request_direct(server: Server) -> None:
    url = server.plan("/direct", Answer(201, {"id": 5}))
    assert http_request(url)["json"] == {"id": 5}
    with pytest.raises(HttpUnavailable, match="no response"):
        http_request("http://127.0.0.1:1/nothing-listens", timeout=2)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"url": "ftp://x/y"}, "url"), ({"url": "not a url"}, "url"),
    ({"method": "BREW"}, "method"), ({"timeout": 0}, "timeout"),
    ({"url": "http://017.0.0.1/"}, "url"),  # httpx refuses leading zeros: not a 500-ish
])
def test_bad_arguments_are_refused(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        http_request(**{"url": "http://127.0.0.1:1/", **kwargs})


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("7") == 7
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=30), usegmt=True),
                               now) == 30
    assert retry_after_seconds(format_datetime(now - timedelta(seconds=30), usegmt=True),
                               now) == 0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


# -- addresses: public only unless the settings allow more --------------------------------
class Listener:
    """A listening socket nobody serves: any connection attempt completes in the kernel's
    backlog, so ``touched`` tells whether anything tried to connect."""

    def __init__(self, host: str, port: int = 0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, port))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.port: int = self.sock.getsockname()[1]

    @classmethod
    def maybe(cls, host: str, port: int) -> Listener | None:
        try:
            return cls(host, port)
        except OSError:
            return None  # no IPv6 here: the refusal is still checked, not the socket

    def touched(self) -> bool:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return False
        conn.close()
        return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    sock = Listener("127.0.0.1")
    yield sock
    sock.close()


#: (URL host, what the refusal says about it): every spelling of loopback, and the
#: metadata service and a private network, which nothing here listens on
REFUSED = [
    ("127.0.0.1", "host 127.0.0.1 is a loopback address"),
    ("localhost", "host 'localhost' resolves to "),
    ("0x7f000001", "host '0x7f000001' resolves to 127.0.0.1, a loopback address"),
    ("2130706433", "host '2130706433' resolves to 127.0.0.1, a loopback address"),
    ("127.1", "host '127.1' resolves to 127.0.0.1, a loopback address"),
    ("0.0.0.0", "host 0.0.0.0 is an unspecified address"),
    ("[::1]", "host ::1 is a loopback address"),
    ("[::]", "host :: is an unspecified address"),
    ("[::ffff:127.0.0.1]", "a loopback (IPv4 127.0.0.1 inside IPv6) address"),
    ("169.254.169.254", "host 169.254.169.254 is a link-local address"),
    ("10.0.0.1", "host 10.0.0.1 is a private address"),
]


def test_non_public_addresses_are_refused_before_any_connection(
        tw: Any, start_worker: Callable[..., WorkerProcess], listener: Listener) -> None:
    start_worker()  # the default settings: public addresses only
    v6 = Listener.maybe("::1", listener.port)
    results = {host: tw.submit(HTTP_CALL, [f"http://{host}:{listener.port}/latest"],
                               {"timeout": 2}) for host, _ in REFUSED}
    for host, says in REFUSED:
        with pytest.raises(HttpRejected) as refused:
            results[host].get(timeout=30)
        message = str(refused.value)
        assert refused.value.status is None, message
        assert "refused before connecting: host " in message
        assert says in message
        assert "http_call.allowed_networks" in message
        assert "http_call.allow_private_networks" in message
    assert not listener.touched()
    assert v6 is None or not v6.touched()
    # HttpRejected is never retried: one attempt, a failure
    task_id = results["127.0.0.1"].id

    def journaled() -> list[tuple[int, str]]:
        with tw.store.session() as session:
            return list(session.execute(select(JournalEntry.attempt, JournalEntry.state)
                                        .where(JournalEntry.task_id == task_id)).tuples())

    assert wait_for(journaled, what="the journaled attempt") == [(1, "failure")]
    if v6 is not None:
        v6.close()


def test_allowed_networks_admit_only_them_and_every_redirect_is_checked(
        tw: Any, server: Server, start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker(env={"TASKWORKS_HTTP_CALL__ALLOWED_NETWORKS": '["127.0.0.1/32"]'})
    ok = server.plan("/inside", Answer(200, {"fine": True}))
    assert tw.submit(HTTP_CALL, [ok]).get(timeout=30)["json"] == {"fine": True}
    other = Listener("127.0.0.2")  # loopback too, but outside 127.0.0.1/32
    hop = server.plan("/hop", Answer(302, "moved",
                                     {"Location": f"http://127.0.0.2:{other.port}/"}))
    with pytest.raises(HttpRejected, match=re.escape("host 127.0.0.2 is a loopback address")):
        tw.submit(HTTP_CALL, [hop]).get(timeout=30)
    assert server.count("/hop") == 1
    assert not other.touched()
    other.close()
    with pytest.raises(HttpRejected, match=re.escape("169.254.169.254 is a link-local address")):
        tw.submit(HTTP_CALL, ["http://169.254.169.254/latest/meta-data/"]).get(timeout=30)


def test_http_request_with_the_settings_refuses_and_without_them_connects(
        server: Server, listener: Listener) -> None:
    url = f"http://127.0.0.1:{listener.port}/"
    with pytest.raises(HttpRejected, match=re.escape("host 127.0.0.1 is a loopback address")):
        http_request(url, timeout=0.5, guard=HttpCallSettings())
    assert not listener.touched()
    # the listener does see an attempt: allowed, the call connects (nobody answers)
    with pytest.raises(HttpUnavailable, match="timed out"):
        http_request(url, timeout=0.5, guard=HttpCallSettings(allow_private_networks=True))
    assert listener.touched()
    inside = HttpCallSettings.model_validate({"allowed_networks": ["127.0.0.0/8"]})
    assert http_request(server.plan("/in", Answer(200, {"n": 1})), guard=inside)["json"] == {
        "n": 1}


@pytest.mark.parametrize(("address", "kind"), [
    ("8.8.8.8", None), ("2606:4700:4700::1111", None), ("93.184.215.14", None),
    ("127.0.0.53", "loopback"), ("::1", "loopback"), ("0.0.0.0", "unspecified"),
    ("::", "unspecified"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("fd00::1", "private"), ("100.64.0.1", "non-global"), ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"), ("240.0.0.1", "private"), ("fec0::1", "site-local"),
    ("::ffff:10.0.0.1", "private (IPv4 10.0.0.1 inside IPv6)"),
    ("2002:7f00:1::", "loopback (IPv4 127.0.0.1 inside IPv6)"),
])
def test_what_counts_as_public(address: str, kind: str | None) -> None:
    from ipaddress import ip_address

    assert non_public(ip_address(address)) == kind
