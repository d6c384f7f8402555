"""``taskworks.http_call`` with a real worker against a real local HTTP server (a thread of
this process, reached by the worker over loopback)."""

from __future__ import annotations

import json
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
from taskworks.store.tables import JournalEntry
from taskworks.tasks.http_call import HTTP_CALL, http_request, retry_after_seconds
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


@pytest.fixture
def worker(tw: Any, start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker()


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
