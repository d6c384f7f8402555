"""Settings: environment (prefix ``TASKWORKS_``), then ``taskworks.toml``, then defaults.

Nested values come from the environment as JSON (``TASKWORKS_ROUTES='{"x.*": "default"}'``)
or with ``__`` between levels (``TASKWORKS_WORKER__TIME_LIMIT=600``). ``load_settings``
turns every validation problem into one ConfigError naming setting, value and expectation.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from taskworks.broker import urls as broker_urls
from taskworks.errors import ConfigError
from taskworks.redaction import SECRET_WORDS, redact_url
from taskworks.runtime.severity import Severity
from taskworks.scheduling.entries import BeatEntry  # re-exported: settings' name for it

__all__ = ["BROKER_SCHEMES", "DATABASE_DRIVERS", "DEFAULT_BEAT", "DEFAULT_QUEUES", "DEFAULT_ROUTES",
           "DEFAULT_SUBMITTABLE_TASKS", "DEFAULT_WORKER_GROUPS", "ApiSettings", "AutoscaleSettings",
           "BeatEntry", "BreakerSettings", "EmailSettings", "HttpCallSettings",
           "IdempotencySettings", "JournalSettings", "NotifySettings", "RetentionSettings",
           "RetrySettings", "Settings", "WebhookSettings", "WorkerDefaults", "WorkerGroup",
           "load_settings"]

DEFAULT_QUEUES = ["default", "cpu_intensive", "io_intensive", "priority", "scheduled"]

# The patterns guide's routes: task-name globs to queues.
DEFAULT_ROUTES = {
    "tasks.cpu_intensive.*": "cpu_intensive",
    "tasks.io_intensive.*": "io_intensive",
    "tasks.priority.*": "priority",
    "tasks.scheduled.*": "scheduled",
}

#: what a REST API client may submit by name: every task of yours and the health check
#: (the rule, and why built-ins need their own pattern: taskworks/submission.py)
DEFAULT_SUBMITTABLE_TASKS = ["*", "taskworks.monitoring.health_check"]

BROKER_SCHEMES = broker_urls.SCHEMES
DATABASE_DRIVERS = ("sqlite", "postgresql")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFAULT_BEAT = {
    "cleanup-expired-data": BeatEntry(
        task="taskworks.cleanup.expired_data", every=3600, queue="scheduled"
    ),
    "daily-report": BeatEntry(task="taskworks.reports.daily", cron="0 2 * * *", queue="scheduled"),
    "health-check": BeatEntry(
        task="taskworks.monitoring.health_check", every=300, queue="priority", priority=9
    ),
}


class WorkerGroup(_Strict):
    """A set of queues served by one kind of worker process."""

    queues: list[str]
    pool: Literal["prefork", "threads", "solo"] = "prefork"
    #: pool slots of each worker process of this group
    concurrency: int = Field(default=2, ge=1, le=256)
    prefetch_multiplier: int = Field(default=1, ge=1, le=1000)
    #: the autoscaler keeps between min_workers and max_workers processes of this group
    min_workers: int = Field(default=1, ge=0, le=256)
    max_workers: int = Field(default=4, ge=1, le=256)
    #: messages (waiting + reserved + running) one worker process is expected to hold;
    #: above it the group scales up
    target_backlog: int = Field(default=20, ge=1)
    #: a queue of this group deeper than 2x this number triggers an emergency scale-up
    queue_threshold: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _min_under_max(self) -> WorkerGroup:
        if self.min_workers > self.max_workers:
            raise ValueError(f"min_workers {self.min_workers} exceeds max_workers "
                             f"{self.max_workers}")
        return self


DEFAULT_WORKER_GROUPS = {
    # short I/O-bound tasks: threads keep many in flight cheaply
    "general": WorkerGroup(queues=["default", "io_intensive", "scheduled"], pool="threads",
                           concurrency=4, prefetch_multiplier=4, max_workers=4,
                           target_backlog=40),
    # long CPU-bound tasks: one process per core, prefetch 1 so a long task never hides others
    "cpu": WorkerGroup(queues=["cpu_intensive"], pool="prefork", concurrency=2, max_workers=2,
                       target_backlog=4),
    # urgent tasks get a worker of their own so a backlog elsewhere never delays them
    "priority": WorkerGroup(queues=["priority"], pool="solo", concurrency=1, max_workers=2,
                            target_backlog=10),
}


class WorkerDefaults(_Strict):
    #: a prefork child is replaced after this many tasks
    max_tasks_per_child: int = Field(default=1000, ge=1)
    #: a prefork child whose resident memory passes this (kB) is replaced after its task;
    #: also how a MemoryError's callback asks for its child to be recycled
    max_memory_per_child: int = Field(default=4_000_000, ge=1)
    #: a solo worker past ``max_memory_per_child`` (or ``solo_max_tasks``) shuts itself
    #: down warm after its task and exits 0 (runtime/recycling.py). Off unless something
    #: starts a new process when one exits 0: ``taskworks worker``'s set of solo processes
    #: and ``taskworks up`` turn it on for theirs (systemd's ``Restart=on-failure`` would
    #: leave the worker stopped, Kubernetes would restart it with a growing back-off)
    solo_recycling: bool = False
    #: a recycling solo worker is replaced after this many tasks; None: by memory only. A
    #: new solo process is a whole interpreter start (about 2 s of CPU) where a prefork
    #: child is a fork: every 1,000 tasks it took more than half of a no-op drain's rate
    solo_max_tasks: int | None = Field(default=None, ge=1)
    #: report STARTED to the result backend when a task begins: one more result write
    #: (GET, SET, PUBLISH) per task; the journal records start times either way
    track_started: bool = False
    #: Celery task events (clients' task-sent; workers' task-received, -started,
    #: -succeeded ...) for Flower or ``celery events``. Nothing in taskworks reads them
    #: (the dashboard reads the journal, the queues and inspect); each is a Redis PUBLISH
    #: through a new kombu client, a third of a prefork worker's CPU on short tasks.
    #: Flower can also turn worker events on at run time (``celery control enable_events``)
    task_events: bool = False
    soft_time_limit: float = Field(default=1500, gt=0)
    time_limit: float = Field(default=1800, gt=0)
    default_priority: int = Field(default=5, ge=0, le=9)

    @model_validator(mode="after")
    def _soft_below_hard(self) -> WorkerDefaults:
        if self.soft_time_limit >= self.time_limit:
            raise ValueError(
                f"soft_time_limit ({self.soft_time_limit}) must be below "
                f"time_limit ({self.time_limit})"
            )
        return self


class EmailSettings(_Strict):
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


class WebhookSettings(_Strict):
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


class NotifySettings(_Strict):
    """Which failures are notified, where, and how often."""

    email: EmailSettings | None = None
    webhook: WebhookSettings | None = None
    #: failures at or above this severity are notified
    min_severity: Severity = Severity.HIGH
    #: the same task and exception type is notified once per window, with a count
    window_seconds: int = Field(default=600, ge=1)


class JournalSettings(_Strict):
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


class RetrySettings(_Strict):
    """The default retry policy, for tasks with none of their own."""

    max_retries: int = Field(default=3, ge=0)
    base_delay: float = Field(default=1.0, ge=0)
    backoff_factor: float = Field(default=2.0, ge=1)
    max_delay: float = Field(default=300.0, ge=0)
    jitter: bool = True
    #: retries per task name per minute across the cluster; beyond it, dead-letter store
    budget_per_minute: int | None = Field(default=None, ge=0)


class BreakerSettings(_Strict):
    """Defaults of circuit breakers used without a configuration of their own
    (``@tw.task(breaker="name")``, ``tw.breakers.get(name)``, http_call's per-host ones)."""

    failure_threshold: int = Field(default=5, ge=1)
    reset_timeout: float = Field(default=30.0, gt=0)
    #: a half-open probe holds its slot this long at most (a dead probe frees it then)
    probe_timeout: float = Field(default=60.0, gt=0)
    #: a breaker's Redis keys expire this many days after its last write: the state of
    #: an ``http_call`` host not called since is dropped (it starts closed again)
    idle_days: float = Field(default=30, gt=0)


class AutoscaleSettings(_Strict):
    """The worker supervisor (scaling/): how often it looks, and the machine's limits."""

    #: seconds between observations
    interval: float = Field(default=2.0, gt=0)
    #: seconds after a scale-up before the same group may scale up again (not emergencies)
    scale_up_cooldown: float = Field(default=5.0, ge=0)
    #: seconds a group must stay under its low-water backlog before one worker is removed
    scale_down_after: float = Field(default=30.0, ge=0)
    #: no scale-up while the machine's CPU use (percent) is above this (100: never held)
    cpu_ceiling: float = Field(default=90.0, gt=0, le=100)
    #: no scale-up while memory use (percent) is above this (the patterns guide's 85 %)
    memory_threshold: float = Field(default=85.0, gt=0, le=100)
    #: worker processes of all groups together never exceed this (None: 4 per core)
    max_total_workers: int | None = Field(default=None, ge=1)
    #: seconds between restarts of a worker that keeps crashing, doubling up to the max
    restart_backoff: float = Field(default=1.0, gt=0)
    restart_backoff_max: float = Field(default=60.0, gt=0)


class IdempotencySettings(_Strict):
    """Idempotent tasks (``@tw.task(idempotent=True)``) and ``submit(dedupe_key=...)``."""

    #: how long a stored result (and a dedupe key) is kept, unless the task sets its own
    ttl_seconds: int = Field(default=86_400, ge=1)
    #: the running lease: renewed every third of it while the task runs, so a killed
    #: worker's lease lapses after at most this long
    lease_seconds: float = Field(default=30, ge=0.3)
    #: a duplicate arriving while the first runs re-checks after this many seconds
    wait_interval: float = Field(default=0.5, gt=0)


class RetentionSettings(_Strict):
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


class ApiSettings(_Strict):
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


class HttpCallSettings(_Strict):
    """Where the built-in task ``taskworks.http_call`` may connect: public addresses only
    unless allowed here (its URL is the submitter's choice; taskworks/tasks/http_guard.py)."""

    #: True: any address, loopback and private networks included (no check at all)
    allow_private_networks: bool = False
    #: non-public networks it may reach all the same (CIDR or one address), such as an
    #: internal API's ``10.20.0.0/16``
    allowed_networks: list[IPvAnyNetwork] = Field(default_factory=list)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TASKWORKS_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Path(".taskworks")
    #: None: the embedded valkey-server, started on ``embedded_port`` under ``data_dir``
    broker_url: str | None = None
    #: None: the broker
    result_backend: str | None = None
    #: None: SQLite file ``taskworks.db`` under ``data_dir``
    database_url: str | None = None
    #: seconds a SQLite write waits for a lock another process holds before it fails (a
    #: task whose outcome then cannot be recorded is requeued: docs/runtime.md)
    sqlite_busy_timeout: float = Field(default=30.0, gt=0)
    embedded_host: str = "127.0.0.1"
    embedded_port: int = Field(default=6399, ge=1, le=65535)
    #: ``always`` fsyncs every write: nothing is lost on power failure, at a throughput cost
    embedded_fsync: Literal["everysec", "always"] = "everysec"
    result_expires: int = Field(default=3600, ge=1)
    #: seconds a reserved, unacknowledged message stays invisible before redelivery;
    #: must exceed the longest time limit and countdown or running tasks get duplicated
    visibility_timeout: int = Field(default=7200, ge=1)
    #: the longest countdown/eta callers use, checked against visibility_timeout
    max_countdown: int = Field(default=0, ge=0)
    queues: list[str] = Field(default_factory=lambda: list(DEFAULT_QUEUES))
    default_queue: str = "default"
    routes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ROUTES))
    beat_schedule: dict[str, BeatEntry] = Field(default_factory=lambda: dict(DEFAULT_BEAT))
    worker: WorkerDefaults = Field(default_factory=WorkerDefaults)
    worker_groups: dict[str, WorkerGroup] = Field(
        default_factory=lambda: dict(DEFAULT_WORKER_GROUPS)
    )
    #: modules imported by workers and beat so that their tasks are registered
    imports: list[str] = Field(default_factory=list)
    log_format: Literal["console", "json"] = "console"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: days health checks and reports are kept before the hourly cleanup deletes them
    retention_days: int = Field(default=14, ge=1)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    idempotency: IdempotencySettings = Field(default_factory=IdempotencySettings)
    #: named databases the ``taskworks.db_operation`` task may use (name -> SQLAlchemy URL);
    #: without a name it runs against the taskworks store (``database_url``)
    databases: dict[str, str] = Field(default_factory=dict)
    autoscale: AutoscaleSettings = Field(default_factory=AutoscaleSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    http_call: HttpCallSettings = Field(default_factory=HttpCallSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("TASKWORKS_CONFIG_FILE", "taskworks.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_path))

    @field_validator("broker_url", "result_backend")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        # kept in the one form kombu, Celery and redis-py all read alike: valkey(s):// as
        # redis(s)://, rediss:// verifying the certificate unless told otherwise
        return None if value is None else broker_urls.normalise(value)

    @field_validator("database_url")
    @classmethod
    def _sql_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                url = make_url(value)
            except ArgumentError as exc:
                raise ValueError(
                    "expected a SQLAlchemy URL such as postgresql://user@host/db "
                    "or sqlite:///path.db"
                ) from exc
            if url.get_backend_name() not in DATABASE_DRIVERS:
                raise ValueError(f"expected a database of kind {' or '.join(DATABASE_DRIVERS)}")
        return value

    @field_validator("databases")
    @classmethod
    def _sql_urls(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            try:
                cls._sql_url(url)
            except ValueError as exc:
                raise ValueError(f"databases[{name!r}]: {exc}") from None
        return value

    @model_validator(mode="after")
    def _queues_known(self) -> Settings:
        known = set(self.queues)
        problems: list[str] = []
        if self.default_queue not in known:
            problems.append(f"default_queue {self.default_queue!r} is not in queues")
        problems += [
            f"routes[{glob!r}] names unknown queue {q!r}"
            for glob, q in self.routes.items() if q not in known
        ]
        problems += [
            f"beat_schedule[{name!r}].queue names unknown queue {e.queue!r}"
            for name, e in self.beat_schedule.items() if e.queue and e.queue not in known
        ]
        problems += [
            f"worker_groups[{name!r}] names unknown queue {q!r}"
            for name, g in self.worker_groups.items() for q in g.queues if q not in known
        ]
        if problems:
            raise ValueError("; ".join(problems) + f" (known queues: {', '.join(self.queues)})")
        return self

    # -- derived values -------------------------------------------------------------
    @property
    def embedded(self) -> bool:
        return self.broker_url is None

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or f"redis://{self.embedded_host}:{self.embedded_port}/0"

    @property
    def effective_result_backend(self) -> str:
        return self.result_backend or self.effective_broker_url

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'taskworks.db').resolve()}"


def _describe(error: dict[str, Any]) -> str:
    field = ".".join(str(p) for p in error["loc"]) or "settings"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str) and "://" in value:
        value = redact_url(value)  # a URL's password never reaches an error message
    if isinstance(value, dict) and error["type"] != "extra_forbidden":
        return f"{field}: {message}"
    return f"{field}: got {value!r}: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Read settings, raising ConfigError that names every invalid setting at once."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [_describe(dict(e)) for e in exc.errors()]
        raise ConfigError(
            "invalid taskworks settings (env TASKWORKS_*, taskworks.toml):\n  "
            + "\n  ".join(lines)
        ) from None
    except SettingsError as exc:  # an environment value that is not valid JSON
        match = re.search(r'field "([^"]+)"', str(exc))
        field = match.group(1) if match else "?"
        env = f"TASKWORKS_{field.upper()}"
        raise ConfigError(
            f"invalid taskworks settings:\n  {field}: got {os.environ.get(env)!r} from {env}: "
            f"expected JSON ({exc.__cause__ or exc})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        path = Path(os.environ.get("TASKWORKS_CONFIG_FILE", "taskworks.toml")).resolve()
        raise ConfigError(f"invalid taskworks settings: {path}: expected TOML ({exc})") from None

