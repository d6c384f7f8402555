"""A flaky local HTTP service, and the circuit breaker protecting its callers.

``breaker_scenario(tw, console)`` (called by ``make demo``) shows, against a real HTTP
server in this process and the breaker's state in the real broker:

1. the service answers; each good answer is kept for fallback (JSON in Redis, TTL);
2. the service fails; after ``failure_threshold`` failures the breaker opens, and callers
   get the last good answer, marked ``"status": "fallback"``, without touching the service;
3. after ``reset_timeout`` eight concurrent callers (separate breaker objects, as if in
   eight processes) race: exactly one probe reaches the service; it fails, the breaker
   re-opens;
4. the service recovers; the next probe succeeds, the breaker closes, answers are fresh.

Run it alone with ``python -m examples.flaky_service`` (starts the embedded broker).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from rich.console import Console
from rich.table import Table

from taskworks.errors import BreakerOpen, HttpUnavailable
from taskworks.resilience.breaker import CircuitBreaker
from taskworks.tasks.http_call import http_request

BREAKER = "demo.flaky-service"
THRESHOLD = 3
RESET_TIMEOUT = 1.5
CALLERS = 8


class FlakyService:
    """``GET /price/<item>``: JSON while up, HTTP 503 while down. Counts every hit."""

    def __init__(self) -> None:
        self.up = True
        self.hits = 0
        self._lock = threading.Lock()
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with service._lock:
                    service.hits += 1
                    hit, up = service.hits, service.up
                time.sleep(0.05)  # a little latency, so concurrent callers overlap
                status, body = (200, {"item": self.path.rsplit("/", 1)[-1], "price": 40 + hit,
                                      "hit": hit}) if up else (503, {"error": "overloaded"})
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[FlakyService]:
        thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.httpd.shutdown()
            self.httpd.server_close()


def _fetch(url: str) -> Any:
    return http_request(url, timeout=5)["json"]


def _describe(answer: Any) -> str:
    if isinstance(answer, dict) and answer.get("status") == "fallback":
        why = ("breaker open, service not called" if answer["reason"].startswith("BreakerOpen")
               else "the call failed")
        return (f"[yellow]fallback[/] price {answer['value']['price']} "
                f"(cached at {answer['cached_at'][11:19]}; {why})")
    return f"[green]fresh[/] price {answer['price']} (service hit {answer['hit']})"


def _race(tw: Any, url: str) -> list[str]:
    """CALLERS callers at once, each with its own breaker object: who got through?"""
    settings = tw.settings.effective_broker_url
    barrier = threading.Barrier(CALLERS)
    outcomes: list[str] = ["?"] * CALLERS

    def caller(i: int) -> None:
        breaker = CircuitBreaker(BREAKER, settings, failure_threshold=THRESHOLD,
                                 reset_timeout=RESET_TIMEOUT, count=(HttpUnavailable,))
        barrier.wait()
        try:
            breaker.call(_fetch, url)
            outcomes[i] = "probe: succeeded"
        except BreakerOpen:
            outcomes[i] = "refused (breaker open)"
        except HttpUnavailable:
            outcomes[i] = "probe: failed"

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def _wait_half_open(breaker: CircuitBreaker) -> None:
    status = breaker.status()
    time.sleep(status.retry_after + 0.05)  # until the server's clock allows a probe


def breaker_scenario(tw: Any, console: Console) -> None:
    """The breaker opening, fallback answers from the cache, the single probe, recovery."""
    breaker = tw.breakers.register(BREAKER, failure_threshold=THRESHOLD,
                                   reset_timeout=RESET_TIMEOUT, count=(HttpUnavailable,))
    breaker.reset("demo start")
    fallback = tw.breakers.fallback(BREAKER, ttl=300)
    service = FlakyService()
    with service.running():
        url = f"{service.url}/price/tea"
        table = Table(title=f"Calls to a flaky service through breaker {BREAKER!r} "
                            f"(threshold {THRESHOLD}, reset {RESET_TIMEOUT}s)")
        for column in ("call", "service", "breaker", "answer", "service hits"):
            table.add_column(column)

        def call(label: str) -> None:
            answer = fallback.call(_fetch, url, fallback_key="tea")
            table.add_row(label, "up" if service.up else "[red]down[/]",
                          breaker.status().state.value, _describe(answer), str(service.hits))

        for i in range(2):
            call(f"#{i + 1}")
        service.up = False
        for i in range(2, 7):
            call(f"#{i + 1}")
        console.print(table)

        _wait_half_open(breaker)
        hits = service.hits
        outcomes = _race(tw, url)
        console.print(f"half-open, service still down: {CALLERS} concurrent callers -> "
                      f"{outcomes.count('probe: failed')} probe (failed), "
                      f"{outcomes.count('refused (breaker open)')} refused; service hits "
                      f"+{service.hits - hits}; breaker {breaker.status().state.value}")

        service.up = True
        _wait_half_open(breaker)
        hits = service.hits
        outcomes = _race(tw, url)
        console.print(f"half-open, service recovered: {CALLERS} concurrent callers -> "
                      f"{outcomes.count('probe: succeeded')} probe (succeeded), "
                      f"{outcomes.count('refused (breaker open)')} refused; service hits "
                      f"+{service.hits - hits}; breaker {breaker.status().state.value}")
        answer = fallback.call(_fetch, url, fallback_key="tea")
        console.print(f"after recovery: {_describe(answer)}")

    status = tw.breakers.show(BREAKER, recent=10)
    journal = Table(title=f"Journal of {BREAKER!r} (taskworks breaker show {BREAKER})")
    for column in ("at", "from", "to", "reason"):
        journal.add_column(column)
    for t in reversed(status.recent):
        journal.add_row(t.at.strftime("%H:%M:%S.%f")[:-3], t.from_state, t.to_state, t.reason)
    console.print(journal)


def main() -> int:
    from examples.demo_app import tw
    from taskworks import logs
    from taskworks.stack import embedded_broker

    logs.configure(tw.settings.log_format, "ERROR")
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 150)
    broker = embedded_broker(tw.settings) if tw.settings.embedded else None
    started = broker.start()[1] if broker is not None else False
    try:
        breaker_scenario(tw, console)
    finally:
        if broker is not None and started:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
