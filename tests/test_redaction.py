"""Secrets never leave in what taskworks stores, sends or prints (taskworks/redaction.py).

The end-to-end tests run a real worker against a real PostgreSQL (an IntegrityError whose
message quotes the value) and a real HTTP server (an http_call URL with credentials and
a token in its query), then read every place the failure went: the journal, the dead
letter, the notification (a real SMTP and webhook server), the breaker and the log.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError

from taskworks.redaction import (
    MASK,
    Redactor,
    error_message,
    redact_settings,
    redact_text,
    redact_url,
    url_for_display,
)
from taskworks.resilience.breaker import CircuitBreaker, read_status
from taskworks.store.engine import make_engine
from taskworks.store.tables import DeadLetter, JournalEntry, Notification
from taskworks.tasks import db_operation
from taskworks.tasks.http_call import HTTP_CALL
from tests.notify import HttpSink, SmtpSink, http_server, smtp_server
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess

SECRET = "hunter2-xyz"

#: what SQLAlchemy 2 and psycopg 3 say for a unique violation (captured from PostgreSQL)
UNIQUE_VIOLATION = (
    '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "t_key"\n'
    f"DETAIL:  Key (secret)=({SECRET}) already exists.\n"
    "[SQL: INSERT INTO t (secret, note) VALUES (%(password)s, 'inline-" + SECRET + "')]\n"
    f"[parameters: {{'password': '{SECRET}', 'user': 'alice'}}]\n"
    "(Background on this error at: https://sqlalche.me/e/21/gkpj)")


# -- the functions --------------------------------------------------------------------
@pytest.mark.parametrize("message", [
    UNIQUE_VIOLATION,
    f"DETAIL:  Failing row contains (1, {SECRET}, null).",
    f'invalid input syntax for type integer: "{SECRET}"',
    f'invalid input value for enum mood: "{SECRET}"',
    f'value "{SECRET}" is out of range for type integer',
    f'invalid input syntax for type json\nDETAIL:  Token "{SECRET}" is invalid.\n'
    f"CONTEXT:  JSON data, line 1: {SECRET}",
    f"DETAIL:  Key (lower(email::text))=({SECRET}@example.org) already exists.",
    f"could not connect to postgresql://app:{SECRET}@db:5432/app",
    f"GET https://api.example.org/v1/items?api_key={SECRET}&page=2: HTTP 500: oops",
    f"https://{SECRET}@github.com/org/repo.git: not found",  # a token as the user name
    f"host=db user=app password={SECRET} dbname=app",
    f"bad params {{'password': '{SECRET}', 'page': 2}}",
    f'{{"api_token": "{SECRET}"}}',
    f"Authorization: Bearer {SECRET}.abc.def",
])
def test_redact_text_removes_the_value(message: str) -> None:
    assert SECRET not in redact_text(message)


def test_redact_text_keeps_what_explains_the_error() -> None:
    shown = redact_text(UNIQUE_VIOLATION)
    assert shown.splitlines() == [
        '(psycopg.errors.UniqueViolation) duplicate key value violates unique constraint "t_key"',
        "DETAIL:  Key (secret)=(***) already exists.",
        "[SQL: INSERT INTO t (secret, note) VALUES (%(password)s, '***')]",
        "[parameters: ***]",
        "(Background on this error at: https://sqlalche.me/e/21/gkpj)",
    ]
    plain = "KeyError: 'password' (see https://example.org/docs.) token: expected 2"
    assert redact_text(plain) == plain
    # a URL's query values go, its trailing punctuation stays the sentence's
    assert redact_text("GET http://h/p?a=1&b=2: HTTP 503") == "GET http://h/p?a=***&b=***: HTTP 503"


def test_redact_text_takes_linear_time_whatever_the_text() -> None:
    # an exception message is anyone's text: none may make a worker spin (a quadratic
    # search took 0.7 s for 25 kB of "Key (" and grows fourfold per doubling)
    for message in ("Key (" * 40_000, "Failing row contains (" * 10_000,
                    'value "' * 30_000,
                    "a." * 100_000 + "token=x", "'a." * 70_000 + "token'"):
        started = time.perf_counter()
        redact_text(message)
        assert time.perf_counter() - started < 2, message[:30]


def test_error_message_is_the_redacted_text_of_the_exception() -> None:
    assert error_message(ValueError(UNIQUE_VIOLATION)) == redact_text(UNIQUE_VIOLATION)


@pytest.mark.parametrize(("url", "shown"), [
    ("https://u:pw@api.example.org/v1/x?api_key=k&page=2#top",
     "https://***@api.example.org/v1/x?api_key=***&page=***#top"),
    ("https://tok@github.com/o/r", "https://***@github.com/o/r"),
    ("http://h/cb#access_token=t&state=s", "http://h/cb#access_token=***&state=***"),
    ("http://h/p?flag", "http://h/p?***"),
    ("http://h:8080/p", "http://h:8080/p"),
    ("redis://:pw@cache:notaport/0?password=x", "redis://***@cache:notaport/0?password=***"),
])
def test_url_for_display_has_no_credentials_nor_query_values(url: str, shown: str) -> None:
    assert url_for_display(url) == shown


def test_url_for_display_can_hide_the_path() -> None:
    hook = "https://hooks.slack.com/services/T0/B0/XXXX?x=1"
    assert url_for_display(hook, keep_path=False) == "https://hooks.slack.com/***"
    assert url_for_display("https://h.example", keep_path=False) == "https://h.example"


def test_redact_url_uses_the_one_word_list() -> None:
    # words that were only in the journal's list before there was one list
    for key in ("apikey", "passwd", "private_key", "credential"):
        assert redact_url(f"redis://cache/0?{key}=s3cret&db=1") == f"redis://cache/0?{key}=***&db=1"
    assert redact_url("postgresql://u:s3cret@db/app") == "postgresql://u:***@db/app"


def test_redactor_masks_headers_spelled_with_dashes_and_urls_in_values() -> None:
    redact = Redactor()
    assert redact({"headers": {"X-Api-Key": "k", "Accept": "json"},
                   "url": "https://u:pw@h/p?token=t&page=2", "n": (1, "plain")}) == {
        "headers": {"X-Api-Key": MASK, "Accept": "json"},
        "url": "https://u:***@h/p?token=***&page=2", "n": [1, "plain"]}
    assert Redactor([])({"password": "x"}) == {"password": "x"}  # redaction turned off


def test_redact_settings_hides_every_secret_of_the_settings() -> None:
    data = {
        "databases": {"billing": f"postgresql://bill:{SECRET}@db/b"},
        "notify": {"email": {"username": "u", "password": SECRET},
                   "webhook": {"url": f"https://hooks.example.org/services/{SECRET}",
                               "headers": {"Authorization": f"Bearer {SECRET}",
                                           "X-Signature": SECRET}}},
        "api": {"token": SECRET, "session_ttl": 60},
        "custom": {"pin": SECRET},
    }
    shown = redact_settings(data, ["pin"])
    assert SECRET not in json.dumps(shown)
    assert shown["databases"]["billing"] == "postgresql://bill:***@db/b"
    assert shown["notify"]["webhook"] == {"url": "https://hooks.example.org/***",
                                          "headers": {"Authorization": MASK,
                                                      "X-Signature": MASK}}
    assert shown["api"] == {"token": MASK, "session_ttl": 60}
    assert data["api"]["token"] == SECRET  # the settings themselves are untouched


# -- the store's engines --------------------------------------------------------------
def test_store_engines_hide_bound_parameters(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    table = f"redaction_{uuid.uuid4().hex[:8]}"
    try:
        with engine.begin() as conn:
            conn.execute(text(f"CREATE TABLE {table} (n INTEGER NOT NULL, note TEXT)"))
        with pytest.raises(IntegrityError) as failed, engine.begin() as conn:
            conn.execute(text(f"INSERT INTO {table} (n, note) VALUES (:n, :note)"),
                         {"n": None, "note": "param-" + SECRET})
        # the statement's own message is PostgreSQL's; the parameters block is gone
        assert "[SQL parameters hidden due to hide_parameters=True]" in str(failed.value)
        assert "[parameters:" not in str(failed.value)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


# -- a failure through a real worker ----------------------------------------------------
@pytest.fixture
def sinks() -> Iterator[tuple[SmtpSink, int, HttpSink]]:
    smtp = SmtpSink()
    with smtp_server(smtp) as port, http_server(HttpSink()) as hook:
        yield smtp, port, hook


@pytest.fixture
def secret_table(postgres_url: str) -> Iterator[tuple[Engine, str]]:
    """A PostgreSQL table whose unique column already holds SECRET."""
    engine = make_engine(postgres_url)
    table = f"redaction_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (secret TEXT UNIQUE)"))
        conn.execute(text(f"INSERT INTO {table} VALUES (:s)"), {"s": SECRET})
    yield engine, table
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()


def _rows(tw: Any, model: Any, **where: Any) -> list[Any]:
    with tw.store.session() as session:
        return list(session.scalars(select(model).filter_by(**where)))


def _text_of(row: Any) -> str:
    return json.dumps({c.key: getattr(row, c.key) for c in row.__table__.columns}, default=str)


def test_a_postgresql_integrity_error_leaves_no_value_in_journal_letter_notice_or_log(
    tw: Any, postgres_url: str, secret_table: tuple[Engine, str],
    sinks: tuple[SmtpSink, int, HttpSink], start_worker: Callable[..., WorkerProcess],
) -> None:
    _, table = secret_table
    smtp, port, hook = sinks
    worker = start_worker(["default", "priority"], env={
        "TASKWORKS_DATABASES": json.dumps({"pg": postgres_url}),
        "TASKWORKS_NOTIFY": json.dumps({
            "email": {"host": "127.0.0.1", "port": port, "recipients": ["ops@example.org"],
                      "timeout": 5},
            "webhook": {"url": hook.url, "timeout": 5}, "min_severity": "high"})})
    result = tw.submit(db_operation.NAME, kwargs={
        "operation": "insert", "database": "pg",
        "statement": f"INSERT INTO {table} (secret) VALUES (:password)",
        "params": {"password": SECRET}})
    result.get(timeout=30, propagate=False)
    [letter] = wait_for(lambda: _rows(tw, DeadLetter, task_id=result.id), what="the letter")
    wait_for(lambda: smtp.messages and hook.bodies, what="the notification")
    wait_for(lambda: _rows(tw, Notification, task_name=db_operation.NAME),
             what="the delivery rows")
    [row] = wait_for(lambda: _rows(tw, JournalEntry, task_id=result.id), what="the journal row")
    worker.stop()  # flushes its log

    # the error is still told: which constraint, which column, where
    assert row.exc_type == "IntegrityError"
    assert "duplicate key value violates unique constraint" in (row.exc_message or "")
    assert "Key (secret)=(***) already exists" in (row.exc_message or "")
    assert "Key (secret)=(***) already exists" in (letter.traceback or "")
    assert letter.kwargs["params"] == {"password": SECRET}  # kept raw: a replay needs it
    stored = {
        "journal": _text_of(row),
        "dead letter": _text_of(letter).replace(json.dumps(letter.kwargs), ""),
        "notification rows": "".join(
            _text_of(n) for n in _rows(tw, Notification, task_name=db_operation.NAME)),
        "email": smtp.messages[0].as_string(),
        "webhook": json.dumps(hook.bodies),
        "worker log": worker.log_path.read_text(),
    }
    assert "Key (secret)=(***)" in stored["email"]
    for where, found in stored.items():
        assert SECRET not in found, where


def test_a_breaker_keeps_no_value_of_a_postgresql_error(
        redis_client: redis.Redis, secret_table: tuple[Engine, str]) -> None:
    engine, table = secret_table
    breaker = CircuitBreaker(f"redaction-{uuid.uuid4().hex[:8]}", redis_client,
                             failure_threshold=1)
    with pytest.raises(IntegrityError), breaker, engine.begin() as conn:
        # a statement of its own engine would carry [parameters: ...] too; this one shows
        # the value PostgreSQL itself quotes, whatever the engine
        conn.execute(text(f"INSERT INTO {table} VALUES (:s)"), {"s": SECRET})
    status = breaker.status(recent=5)
    assert status.state.value == "open"
    assert status.last_error is not None
    assert "Key (secret)=(***) already exists" in status.last_error
    assert SECRET not in json.dumps(status.as_dict(), default=str)  # reasons included


class _Failing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(500)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"down")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


def test_http_call_errors_show_the_url_without_credentials_or_query_values(
    tw: Any, redis_client: redis.Redis, failing_server: int,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker(env={"TASKWORKS_HTTP_CALL__ALLOW_PRIVATE_NETWORKS": "true"})
    where = f"127.0.0.1:{failing_server}/v1/items"
    url = f"http://app:pw-{SECRET}@{where}?access_token=q-{SECRET}&page=2"
    result = tw.submit(HTTP_CALL, [url])
    with pytest.raises(Exception) as failed:
        result.get(timeout=30)
    [letter] = wait_for(lambda: _rows(tw, DeadLetter, task_id=result.id), what="the letter")
    rows = wait_for(lambda: len(got := _rows(tw, JournalEntry, task_id=result.id)) == 3 and got,
                    what="three attempts")  # the sample app's http_call policy: 2 retries
    worker.stop()

    shown = f"GET http://***@{where}?access_token=***&page=***: HTTP 500: down"
    assert str(failed.value) == shown  # the result backend got it so from the worker
    assert letter.exc_message == shown
    assert [r.exc_message for r in rows] == [shown] * 3
    status = read_status(redis_client, f"http:127.0.0.1:{failing_server}")
    assert status.last_error == f"HttpUnavailable: {shown}"
    everything = [str(failed.value), _text_of(letter).replace(json.dumps(letter.args), ""),
                  *(_text_of(r) for r in rows), json.dumps(status.as_dict(), default=str),
                  worker.log_path.read_text()]
    for found in everything:
        assert SECRET not in found
