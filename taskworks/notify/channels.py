"""Where failure notifications go: SMTP (stdlib smtplib) and a webhook (httpx).

Every failure of a channel is a NotificationError whose text is safe to log and store:
it never holds the SMTP password, the webhook headers or the webhook URL's path (a Slack
webhook URL is itself a secret), only host and port.
"""

from __future__ import annotations

import smtplib
import ssl
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from taskworks.errors import NotificationError
from taskworks.notify.notice import FailureNotice, one_line
from taskworks.settings import EmailSettings, WebhookSettings

__all__ = ["ANSWER_EXCERPT", "MAIL_POLICY", "Channel", "EmailChannel", "WebhookChannel"]

#: RFC 5322's line limit: the default 78 folds a longish subject onto a line of its own,
#: which some readers show with a leading blank
MAIL_POLICY = policy.default.clone(max_line_length=998)
#: how much of a webhook's error answer is kept in the error text
ANSWER_EXCERPT = 200


class Channel(Protocol):
    name: str

    def send(self, notice: FailureNotice) -> None: ...


class EmailChannel:
    name = "email"

    def __init__(self, settings: EmailSettings) -> None:
        self.settings = settings

    def message(self, notice: FailureNotice) -> EmailMessage:
        s = self.settings
        msg = EmailMessage(policy=MAIL_POLICY)
        msg["Subject"] = notice.subject()
        msg["From"] = s.sender
        msg["To"] = ", ".join(s.recipients)
        msg["Date"] = formatdate(usegmt=True)
        # an explicit domain: make_msgid() would otherwise ask DNS for this host's FQDN
        msg["Message-ID"] = make_msgid(domain=s.sender.rpartition("@")[2] or "taskworks")
        # for mail filters
        msg["X-Taskworks-Task"] = one_line(notice.task_name)
        msg["X-Taskworks-Severity"] = notice.severity
        msg.set_content(notice.text())
        return msg

    def send(self, notice: FailureNotice) -> None:
        s = self.settings
        where = f"{s.host}:{s.port}"
        if not s.recipients:
            raise NotificationError("email: notify.email.recipients is empty: nobody to send to")
        try:
            msg = self.message(notice)
            # created per send: picks up the system's CA store as it is now
            context = ssl.create_default_context()
            smtp = (smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context)
                    if s.tls == "ssl" else smtplib.SMTP(s.host, s.port, timeout=s.timeout))
            with smtp:
                if s.tls == "starttls":
                    smtp.starttls(context=context)
                if s.username:
                    smtp.login(s.username, s.password or "")
                refused = smtp.send_message(msg)
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            # ValueError: a header EmailMessage refuses (a malformed sender, say)
            raise NotificationError(f"email via {where}: {type(exc).__name__}: {exc}") from exc
        if refused:
            # some recipients got it; the rest must show up as a failure, not vanish
            raise NotificationError(f"email via {where}: recipients refused: {refused}")


class WebhookChannel:
    name = "webhook"

    def __init__(self, settings: WebhookSettings) -> None:
        self.settings = settings
        parts = urlsplit(settings.url)
        # the only part of the URL fit for logs
        self.origin = f"{parts.scheme}://{parts.hostname}" + (
            f":{parts.port}" if parts.port else "")

    def body(self, notice: FailureNotice) -> dict[str, Any]:
        if self.settings.slack:
            return {"text": f"*{_slack(notice.subject())}*\n{_slack(notice.text())}"}
        return notice.to_json()

    def send(self, notice: FailureNotice) -> None:
        s = self.settings
        try:
            response = httpx.post(s.url, json=self.body(notice), headers=s.headers,
                                  timeout=s.timeout)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise NotificationError(
                f"webhook {self.origin}: {type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            # a redirect counts too: following it would resend the body elsewhere
            answer = one_line(response.text)[:ANSWER_EXCERPT]
            raise NotificationError(
                f"webhook {self.origin} answered HTTP {response.status_code}: {answer}")


def _slack(text: str) -> str:
    # Slack reads <...> as links and mentions: escape the three characters it reserves
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
