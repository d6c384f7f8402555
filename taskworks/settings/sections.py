"""The runtime's settings sections (notifications, journal, retries, breakers,
idempotency, retention) and the API's."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator

from taskworks.redaction import SECRET_WORDS
from taskworks.runtime.severity import Severity
from taskworks.settings.base import Strict

__all__ = ["DEFAULT_SUBMITTABLE_TASKS", "ApiSettings", "BreakerSettings", "EmailSettings",
           "HttpCallSettings", "IdempotencySettings", "JournalSettings", "NotifySettings",
           "RetentionSettings", "RetrySettings", "WebhookSettings"]

#: what a REST API client may submit by name: every task of yours and the health check
#: (the rule, and why built-ins need their own pattern: taskworks/submission.py)
DEFAULT_SUBMITTABLE_TASKS = ["*", "taskworks.monitoring.health_check"]


class EmailSettings(Strict):
    """SMTP delivery of failure notifications (stdlib smtplib)."""

    host: str = "localhost"
    port: int = Field(default=25, ge=1, le=65535)
    #: none, starttls (upgrade a plain connection) or ssl (TLS from the first byte)
    tls: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password: str | None = None
    sender: str = "taskworks@localhost"
    recipients: list[str] = Field(default_factory=list)
    timeout: float = Field(default=10, gt=0)


class WebhookSettings(Strict):
    """JSON POST of failure notifications (httpx)."""

    url: str
    #: a Slack-compatible body ({"text": ...}) instead of taskworks' own JSON
    slack: bool = False
    timeout: float = Field(default=10, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value


class NotifySettings(Strict):
    """Which failures are notified, where, and how often."""

    email: EmailSettings | None = None
    webhook: WebhookSettings | None = None
    #: failures at or above this severity are notified
    min_severity: Severity = Severity.HIGH
    #: the same task and exception type is notified once per window, with a count
    window_seconds: int = Field(default=600, ge=1)


class JournalSettings(Strict):
    """The outcome journal: every attempt of every task, written in batches."""

    enabled: bool = True
    #: argument keys whose values are replaced by *** (substring, case-insensitive)
    redact_keys: list[str] = Field(default_factory=lambda: list(SECRET_WORDS))
    result_max_chars: int = Field(default=1000, ge=0)
    traceback_max_chars: int = Field(default=20_000, ge=0)
    #: the hourly cleanup deletes entries older than this, and the oldest beyond max_rows
    retention_days: int = Field(default=30, ge=1)
    max_rows: int = Field(default=1_000_000, ge=1)
    #: a batch is written when it reaches batch_size or after flush_interval seconds
    batch_size: int = Field(default=500, ge=1)
    flush_interval: float = Field(default=0.5, gt=0)
    #: write a task's rows before its message is acknowledged, so a SIGKILLed worker
    #: loses none (tasks finishing together share one INSERT); False: batches only
    durable: bool = True
    #: durable, in a solo worker: a success's result and acknowledgement wait for its row
    #: at most this long while the next tasks run, so rows share a commit; 0: each task
    #: waits for its own row before it returns
    group_commit_ms: float = Field(default=10.0, ge=0, le=1000)


class RetrySettings(Strict):
    """The default retry policy, for tasks with none of their own."""

    max_retries: int = Field(default=3, ge=0)
    base_delay: float = Field(default=1.0, ge=0)
    backoff_factor: float = Field(default=2.0, ge=1)
    max_delay: float = Field(default=300.0, ge=0)
    jitter: bool = True
    #: retries per task name per minute across the cluster; beyond it, dead-letter store
    budget_per_minute: int | None = Field(default=None, ge=0)


class BreakerSettings(Strict):
    """Defaults of circuit breakers used without a configuration of their own
    (``@tw.task(breaker="name")``, ``tw.breakers.get(name)``, http_call's per-host ones)."""

    failure_threshold: int = Field(default=5, ge=1)
    reset_timeout: float = Field(default=30.0, gt=0)
    #: a half-open probe holds its slot this long at most (a dead probe frees it then)
    probe_timeout: float = Field(default=60.0, gt=0)
    #: a breaker's Redis keys expire this many days after its last write: the state of
    #: an ``http_call`` host not called since is dropped (it starts closed again)
    idle_days: float = Field(default=30, gt=0)


class IdempotencySettings(Strict):
    """Idempotent tasks (``@tw.task(idempotent=True)``) and ``submit(dedupe_key=...)``."""

    #: how long a stored result (and a dedupe key) is kept, unless the task sets its own
    ttl_seconds: int = Field(default=86_400, ge=1)
    #: the running lease: renewed every third of it while the task runs, so a killed
    #: worker's lease lapses after at most this long
    lease_seconds: float = Field(default=30, ge=0.3)
    #: a duplicate arriving while the first runs re-checks after this many seconds
    wait_interval: float = Field(default=0.5, gt=0)


class RetentionSettings(Strict):
    """How long what grows with use is kept: the hourly cleanup
    (``taskworks.cleanup.expired_data``) deletes the rest (taskworks/store/retention.py)."""

    #: dead letters never replayed: evidence of a failure nobody acted on yet, kept longest
    dead_letters_days: int = Field(default=90, ge=1)
    #: dead letters replayed at least once, counted from their last replay
    replayed_dead_letters_days: int = Field(default=30, ge=1)
    notifications_days: int = Field(default=30, ge=1)
    #: finished workflow runs and their steps, counted from the end of the run; then the
    #: definitions no run uses that a newer version or a map-reduce job left behind
    workflow_runs_days: int = Field(default=30, ge=1)
    #: finished map-reduce jobs (processing_results), with their run and definition
    mapreduce_jobs_days: int = Field(default=30, ge=1)
    scaling_decisions_days: int = Field(default=14, ge=1)
    #: rows per DELETE transaction: a large backlog never holds one long lock (a run's
    #: steps go in one, however many: a map-reduce job has up to 10,001)
    batch_size: int = Field(default=1000, ge=1, le=10_000)
    #: newest entries kept in ``taskworks:undeliverable`` (also trimmed by the cleanup)
    undeliverable_max: int = Field(default=10_000, ge=1)


def _api_token_from_env() -> SecretStr | None:
    # the documented short name; TASKWORKS_API__TOKEN (nested form) still wins over it
    raw = os.environ.get("TASKWORKS_API_TOKEN")
    return SecretStr(raw) if raw else None


class ApiSettings(Strict):
    """The REST API and dashboard (``taskworks api``): loopback only unless a token is set."""

    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=1, le=65535)
    #: bearer token for /api/* and the dashboard's login; required to bind a
    #: non-loopback address (env TASKWORKS_API_TOKEN). Never printed.
    token: SecretStr | None = Field(default_factory=_api_token_from_env)
    #: seconds a dashboard login lasts: the cookie and its server-side session (Redis)
    #: expire together; logging out ends the session at once
    session_ttl: int = Field(default=12 * 3600, ge=1)
    #: POST /login attempts allowed per client address per ``login_window`` seconds,
    #: counted in Redis (every API process shares them); more get a 429
    login_attempts: int = Field(default=5, ge=1)
    login_window: int = Field(default=60, ge=1)
    #: origins (``https://host[:port]``) other than the server's own whose pages may send
    #: state-changing requests: only needed behind a proxy that rewrites the Host header
    trusted_origins: list[str] = Field(default_factory=list)
    #: task-name globs a client may submit (POST /api/tasks). ``taskworks.*`` and
    #: ``celery.*`` tasks match only a glob starting with that prefix: "*" is your tasks
    submittable_tasks: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SUBMITTABLE_TASKS))


class HttpCallSettings(Strict):
    """Where the built-in task ``taskworks.http_call`` may connect: public addresses only
    unless allowed here (its URL is the submitter's choice; taskworks/tasks/http_guard.py)."""

    #: True: any address, loopback and private networks included (no check at all)
    allow_private_networks: bool = False
    #: non-public networks it may reach all the same (CIDR or one address), such as an
    #: internal API's ``10.20.0.0/16``
    allowed_networks: list[IPvAnyNetwork] = Field(default_factory=list)
