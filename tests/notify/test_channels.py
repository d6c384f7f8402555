"""The notice and its channels, against a real SMTP server and a real HTTP server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskworks.errors import InvalidInput, NotificationError, TaskworksError
from taskworks.notify.channels import EmailChannel, WebhookChannel
from taskworks.notify.notice import FailureNotice
from taskworks.runtime.severity import Severity
from taskworks.settings import EmailSettings, WebhookSettings
from tests.notify import (
    HttpSink,
    SmtpSink,
    authenticator,
    http_server,
    self_signed,
    server_context,
    smtp_server,
)
from tests.support.postgres import free_port

NOTICE = FailureNotice(
    task_name="tasks.io_intensive.fetch", task_id="c0ffee", exc_type="ConnectionError",
    exc_message="upstream <down> & out", severity="high", hostname="w1@box", attempt=3,
    traceback_excerpt='  File "fetch.py", line 9\nConnectionError: upstream down',
)


# -- the notice ----------------------------------------------------------------------

notices = st.builds(
    FailureNotice,
    task_name=st.text(), task_id=st.text(), exc_type=st.text(), exc_message=st.text(),
    severity=st.sampled_from([s.value for s in Severity]), hostname=st.text(),
    attempt=st.integers(0, 10**6), traceback_excerpt=st.text(),
    occurrences=st.integers(1, 10**6),
)


@given(notices)
def test_notice_survives_json(notice: FailureNotice) -> None:
    assert FailureNotice.from_json(json.loads(json.dumps(notice.to_json()))) == notice


@given(notices)
def test_subject_is_one_header_line(notice: FailureNotice) -> None:
    subject = notice.subject()
    assert "\n" not in subject
    assert "\r" not in subject


def test_from_json_ignores_unknown_keys_and_defaults_optional_ones() -> None:
    data = {k: v for k, v in NOTICE.to_json().items()
            if k not in ("traceback_excerpt", "occurrences")}
    notice = FailureNotice.from_json({**data, "added_later": 1})
    assert notice == FailureNotice(**data)
    assert (notice.traceback_excerpt, notice.occurrences) == ("", 1)


@pytest.mark.parametrize(("change", "field"), [
    ({"attempt": "3"}, "notice.attempt"),
    ({"attempt": True}, "notice.attempt"),
    ({"occurrences": 0}, "notice.occurrences"),
    ({"severity": "urgent"}, "notice.severity"),
    ({"task_name": None}, "notice.task_name"),
])
def test_from_json_rejects_wrong_values(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        FailureNotice.from_json({**NOTICE.to_json(), **change})
    assert caught.value.field == field


def test_from_json_names_missing_keys() -> None:
    data = NOTICE.to_json()
    del data["task_id"]
    with pytest.raises(InvalidInput, match="task_id"):
        FailureNotice.from_json(data)


def test_text_tells_what_failed_where_and_how_often() -> None:
    text = FailureNotice(**{**NOTICE.to_json(), "occurrences": 4}).text()
    for part in ("tasks.io_intensive.fetch failed: ConnectionError: upstream <down> & out",
                 "c0ffee", "w1@box", "attempt:     3", "occurrences: 4",
                 'File "fetch.py", line 9'):
        assert part in text
    assert NOTICE.subject() == (
        "[taskworks] HIGH: tasks.io_intensive.fetch failed with ConnectionError")
    assert FailureNotice(**{**NOTICE.to_json(), "occurrences": 4}).subject().endswith("(4x)")


# -- email ---------------------------------------------------------------------------

def email(port: int, **options: object) -> EmailChannel:
    return EmailChannel(EmailSettings.model_validate({
        "host": "127.0.0.1", "port": port, "sender": "tw@example.org",
        "recipients": ["ops@example.org", "dev@example.org"], "timeout": 5, **options,
    }))


def test_email_reaches_every_recipient() -> None:
    sink = SmtpSink()
    with smtp_server(sink) as port:
        email(port).send(NOTICE)
    assert sink.envelopes == [("tw@example.org", ["ops@example.org", "dev@example.org"])]
    [msg] = sink.messages
    assert msg["Subject"] == NOTICE.subject()
    assert msg["From"] == "tw@example.org"
    assert msg["To"] == "ops@example.org, dev@example.org"
    assert msg["X-Taskworks-Severity"] == "high"
    assert msg.get_content().replace("\r\n", "\n") == NOTICE.text()  # CRLF on the wire


def test_email_with_a_refused_recipient_fails() -> None:
    sink = SmtpSink(refuse={"dev@example.org"})
    with smtp_server(sink) as port, pytest.raises(NotificationError, match=r"dev@example\.org"):
        email(port).send(NOTICE)
    assert sink.envelopes == [("tw@example.org", ["ops@example.org"])]


def test_email_without_a_server_fails_from_the_socket_error() -> None:
    with pytest.raises(NotificationError, match=r"127\.0\.0\.1") as caught:
        email(free_port()).send(NOTICE)
    assert isinstance(caught.value, TaskworksError)
    assert isinstance(caught.value.__cause__, OSError)


def test_email_without_recipients_fails() -> None:
    with pytest.raises(NotificationError, match="recipients"):
        email(free_port(), recipients=[]).send(NOTICE)


def test_email_starttls_and_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # trust our own certificate
    sink = SmtpSink()
    with smtp_server(sink, tls_context=server_context(cert, key), require_starttls=True,
                     authenticator=authenticator("tw", "s3cret-pw"),
                     auth_required=True) as port:
        email(port, tls="starttls", username="tw", password="s3cret-pw").send(NOTICE)
        with pytest.raises(NotificationError) as caught:
            email(port, tls="starttls", username="tw", password="wrong-pw").send(NOTICE)
    assert len(sink.messages) == 1
    assert "wrong-pw" not in str(caught.value)
    assert "535" in str(caught.value)  # the server's "authentication failed"


def test_email_login_is_required_by_such_a_server(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    sink = SmtpSink()
    with smtp_server(sink, tls_context=server_context(cert, key), require_starttls=True,
                     authenticator=authenticator("tw", "pw"), auth_required=True) as port, \
            pytest.raises(NotificationError, match="530"):
        email(port, tls="starttls").send(NOTICE)
    assert sink.messages == []


def test_email_over_implicit_tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    sink = SmtpSink()
    with smtp_server(sink, ssl_context=server_context(cert, key)) as port:
        email(port, tls="ssl").send(NOTICE)
    assert [m["Subject"] for m in sink.messages] == [NOTICE.subject()]


def test_email_refuses_an_untrusted_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    sink = SmtpSink()
    with smtp_server(sink, tls_context=server_context(cert, key)) as port, \
            pytest.raises(NotificationError, match="CERTIFICATE_VERIFY_FAILED"):
        email(port, tls="starttls").send(NOTICE)
    assert sink.messages == []


# -- webhook -------------------------------------------------------------------------

def webhook(url: str, **options: object) -> WebhookChannel:
    return WebhookChannel(WebhookSettings.model_validate({"url": url, "timeout": 5, **options}))


def test_webhook_posts_the_notice_as_json_with_the_headers() -> None:
    with http_server(HttpSink()) as sink:
        webhook(sink.url, headers={"Authorization": "Bearer tok-123"}).send(NOTICE)
    [body] = sink.bodies
    assert FailureNotice.from_json(body) == NOTICE
    assert sink.headers[0]["authorization"] == "Bearer tok-123"
    assert sink.headers[0]["content-type"] == "application/json"


def test_webhook_slack_body_is_text_escaped() -> None:
    with http_server(HttpSink(status=200, answer=b"ok")) as sink:
        webhook(sink.url, slack=True).send(NOTICE)
    [body] = sink.bodies
    assert list(body) == ["text"]
    assert body["text"].startswith(f"*{NOTICE.subject()}*\n")
    assert "upstream &lt;down&gt; &amp; out" in body["text"]


def test_webhook_error_status_is_a_failure_with_the_status() -> None:
    with http_server(HttpSink(status=500, answer=b"boom\ninside")) as sink, \
            pytest.raises(NotificationError, match="HTTP 500: boom inside") as caught:
        webhook(sink.url, headers={"Authorization": "Bearer tok-123"}).send(NOTICE)
    assert len(sink.bodies) == 1
    # the path of a webhook URL is a credential (Slack's are), as are the headers
    assert "SECRETPATH" not in str(caught.value)
    assert "tok-123" not in str(caught.value)


def test_webhook_redirect_is_not_followed() -> None:
    with http_server(HttpSink(status=302)) as sink, \
            pytest.raises(NotificationError, match="HTTP 302"):
        webhook(sink.url).send(NOTICE)


def test_webhook_without_a_server_fails_from_the_transport_error() -> None:
    with pytest.raises(NotificationError, match=r"http://127\.0\.0\.1") as caught:
        webhook(f"http://127.0.0.1:{free_port()}/hook").send(NOTICE)
    assert caught.value.__cause__ is not None
