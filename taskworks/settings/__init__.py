"""Settings: environment (prefix ``TASKWORKS_``), then ``taskworks.toml``, then defaults.

The sections are in ``workers.py`` (queue topology, worker defaults, the supervisor) and
``sections.py`` (runtime and API); this module holds the whole and its loading. Nested
values come from the environment as JSON (``TASKWORKS_ROUTES='{"x.*": "default"}'``)
or with ``__`` between levels (``TASKWORKS_WORKER__TIME_LIMIT=600``). ``load_settings``
turns every validation problem into one ConfigError naming setting, value and expectation.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
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
from taskworks.redaction import redact_url
from taskworks.scheduling.entries import BeatEntry  # re-exported: settings' name for it
from taskworks.settings.sections import (
    DEFAULT_SUBMITTABLE_TASKS,
    ApiSettings,
    BreakerSettings,
    EmailSettings,
    HttpCallSettings,
    IdempotencySettings,
    JournalSettings,
    NotifySettings,
    RetentionSettings,
    RetrySettings,
    WebhookSettings,
)
from taskworks.settings.workers import (
    DEFAULT_BEAT,
    DEFAULT_QUEUES,
    DEFAULT_ROUTES,
    DEFAULT_WORKER_GROUPS,
    AutoscaleSettings,
    WorkerDefaults,
    WorkerGroup,
)

__all__ = ["BROKER_SCHEMES", "DATABASE_DRIVERS", "DEFAULT_BEAT", "DEFAULT_QUEUES", "DEFAULT_ROUTES",
           "DEFAULT_SUBMITTABLE_TASKS", "DEFAULT_WORKER_GROUPS", "ApiSettings", "AutoscaleSettings",
           "BeatEntry", "BreakerSettings", "EmailSettings", "HttpCallSettings",
           "IdempotencySettings", "JournalSettings", "NotifySettings", "RetentionSettings",
           "RetrySettings", "Settings", "WebhookSettings", "WorkerDefaults", "WorkerGroup",
           "load_settings"]

BROKER_SCHEMES = broker_urls.SCHEMES
DATABASE_DRIVERS = ("sqlite", "postgresql")


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

