"""Settings: defaults, environment, taskworks.toml, and one clear ConfigError for bad values."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.schedules import crontab

from taskworks import topology
from taskworks.errors import ConfigError, InvalidInput
from taskworks.redaction import redact_url
from taskworks.settings import DEFAULT_QUEUES, Settings, load_settings

SEED_QUEUES = ["default", "cpu_intensive", "io_intensive", "priority", "scheduled"]
SEED_ROUTES = {
    "tasks.cpu_intensive.*": "cpu_intensive",
    "tasks.io_intensive.*": "io_intensive",
    "tasks.priority.*": "priority",
    "tasks.scheduled.*": "scheduled",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No TASKWORKS_* from the session or the developer; no taskworks.toml in the cwd."""
    for name in list(os.environ):
        if name.startswith("TASKWORKS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config_error(**env: str) -> str:
    """The ConfigError message load_settings raises with these environment variables."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        with pytest.raises(ConfigError) as info:
            load_settings()
    return str(info.value)


def set_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


# -- defaults ------------------------------------------------------------------------


def test_defaults_are_the_seed_topology() -> None:
    settings = load_settings()
    assert settings.queues == SEED_QUEUES
    assert settings.default_queue == "default"
    assert settings.routes == SEED_ROUTES
    assert settings.embedded is True
    assert settings.embedded_port == 6399
    assert settings.effective_broker_url == "redis://127.0.0.1:6399/0"
    assert settings.effective_result_backend == "redis://127.0.0.1:6399/0"
    assert settings.effective_database_url == (
        f"sqlite:///{(Path.cwd() / '.taskworks' / 'taskworks.db').resolve()}"
    )
    assert settings.worker.soft_time_limit == 1500
    assert settings.worker.time_limit == 1800
    assert settings.worker.max_tasks_per_child == 1000
    assert settings.visibility_timeout == 7200


def test_defaults_do_not_share_mutable_state() -> None:
    first = load_settings()
    first.queues.append("extra")
    first.routes["extra.*"] = "extra"
    second = load_settings()
    assert second.queues == SEED_QUEUES
    assert second.routes == SEED_ROUTES
    assert DEFAULT_QUEUES == SEED_QUEUES


def test_default_beat_schedule_has_the_three_seed_entries() -> None:
    beat = topology.beat_schedule(load_settings())
    assert sorted(beat) == ["cleanup-expired-data", "daily-report", "health-check"]

    cleanup = beat["cleanup-expired-data"]
    assert cleanup["task"] == "taskworks.cleanup.expired_data"
    assert cleanup["schedule"] == timedelta(hours=1)
    assert cleanup["options"] == {"queue": "scheduled"}

    report = beat["daily-report"]
    assert report["task"] == "taskworks.reports.daily"
    assert isinstance(report["schedule"], crontab)
    assert report["schedule"] == crontab(minute="0", hour="2")
    assert report["options"] == {"queue": "scheduled"}

    health = beat["health-check"]
    assert health["task"] == "taskworks.monitoring.health_check"
    assert health["schedule"] == timedelta(minutes=5)
    assert health["options"] == {"queue": "priority", "priority": 9}
    assert health["args"] == ()
    assert health["kwargs"] == {}


def test_celery_config_defaults() -> None:
    config = topology.celery_config(load_settings())
    assert [q.name for q in config["task_queues"]] == SEED_QUEUES
    assert all(q.routing_key == q.name for q in config["task_queues"])
    assert all(q.queue_arguments == {"x-max-priority": 10} for q in config["task_queues"])
    assert config["task_routes"] == ({glob: {"queue": q} for glob, q in SEED_ROUTES.items()},)
    assert config["task_default_queue"] == "default"
    assert config["broker_url"] == "redis://127.0.0.1:6399/0"
    assert config["result_backend"] == "redis://127.0.0.1:6399/0"
    # reliability: ack after the work, requeue when the worker dies, prefetch one
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["task_acks_on_failure_or_timeout"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["worker_cancel_long_running_tasks_on_connection_loss"] is True
    assert config["task_soft_time_limit"] == 1500
    assert config["task_time_limit"] == 1800
    assert config["worker_max_tasks_per_child"] == 1000
    transport = config["broker_transport_options"]
    assert transport["visibility_timeout"] == 7200
    assert transport["priority_steps"] == list(range(10))
    assert config["result_backend_transport_options"]["visibility_timeout"] == 7200
    assert config["task_serializer"] == "json"
    assert config["accept_content"] == ["json"]
    assert config["timezone"] == "UTC"
    assert config["enable_utc"] is True
    assert sorted(config["beat_schedule"]) == [
        "cleanup-expired-data", "daily-report", "health-check",
    ]
    assert config["imports"] == []


# -- environment -----------------------------------------------------------------------


def test_env_overrides_embedded_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKWORKS_EMBEDDED_PORT", "7123")
    settings = load_settings()
    assert settings.embedded_port == 7123
    assert settings.effective_broker_url == "redis://127.0.0.1:7123/0"
    assert topology.celery_config(settings)["broker_url"] == "redis://127.0.0.1:7123/0"


def test_env_routes_as_json_replace_the_seed_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKWORKS_ROUTES", json.dumps({"billing.*": "priority", "x.*": "default"}))
    settings = load_settings()
    assert settings.routes == {"billing.*": "priority", "x.*": "default"}
    assert topology.route_for(settings, "billing.charge") == "priority"
    assert topology.route_for(settings, "tasks.cpu_intensive.crunch") is None


def test_env_nested_worker_time_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKWORKS_WORKER__TIME_LIMIT", "2400")
    settings = load_settings()
    assert settings.worker.time_limit == 2400
    # the other worker settings keep their defaults
    assert settings.worker.soft_time_limit == 1500
    assert settings.worker.max_tasks_per_child == 1000
    assert topology.celery_config(settings)["task_time_limit"] == 2400


def test_init_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKWORKS_EMBEDDED_PORT", "7123")
    assert load_settings(embedded_port=7124).embedded_port == 7124


# -- taskworks.toml --------------------------------------------------------------------

TOML = """\
embedded_port = 7100
log_level = "DEBUG"
queues = ["default", "bulk"]
visibility_timeout = 9000

[routes]
"bulk.*" = "bulk"

[worker]
soft_time_limit = 50
time_limit = 100

[beat_schedule.tick]
task = "bulk.tick"
cron = "*/5 * * * *"
queue = "bulk"

[worker_groups.bulk]
queues = ["default", "bulk"]
pool = "threads"
concurrency = 8
"""


def test_config_file_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "conf" / "mine.toml"
    path.parent.mkdir()
    path.write_text(TOML)
    monkeypatch.setenv("TASKWORKS_CONFIG_FILE", str(path))
    settings = load_settings()
    assert settings.embedded_port == 7100
    assert settings.log_level == "DEBUG"
    assert settings.queues == ["default", "bulk"]
    assert settings.routes == {"bulk.*": "bulk"}
    assert settings.visibility_timeout == 9000
    assert (settings.worker.soft_time_limit, settings.worker.time_limit) == (50, 100)
    assert list(settings.beat_schedule) == ["tick"]
    assert settings.beat_schedule["tick"].cron == "*/5 * * * *"
    assert settings.worker_groups["bulk"].pool == "threads"
    assert settings.worker_groups["bulk"].concurrency == 8
    assert list(settings.worker_groups) == ["bulk"]
    config = topology.celery_config(settings)
    assert [q.name for q in config["task_queues"]] == ["default", "bulk"]
    assert config["beat_schedule"]["tick"]["schedule"] == crontab(minute="*/5")
    assert topology.route_for(settings, "bulk.resize") == "bulk"


def test_taskworks_toml_in_cwd_is_read(clean_environment: Path) -> None:
    (clean_environment / "taskworks.toml").write_text("embedded_port = 7101\n")
    assert load_settings().embedded_port == 7101


def test_env_wins_over_the_config_file_and_nested_values_merge(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "taskworks-other.toml"
    path.write_text(TOML)
    set_env(monkeypatch, TASKWORKS_CONFIG_FILE=str(path), TASKWORKS_EMBEDDED_PORT="7200",
            TASKWORKS_WORKER__TIME_LIMIT="80")
    settings = load_settings()
    assert settings.embedded_port == 7200
    assert settings.log_level == "DEBUG"  # from the file
    # the env's time_limit merges with the file's soft_time_limit
    assert (settings.worker.soft_time_limit, settings.worker.time_limit) == (50, 80)


def test_unknown_key_in_config_file_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("embeded_port = 7100\n")
    monkeypatch.setenv("TASKWORKS_CONFIG_FILE", str(path))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "embeded_port: got 7100" in str(info.value)
    assert "not permitted" in str(info.value)


# -- bad settings: ConfigError naming setting, value and expectation -------------------


@pytest.mark.parametrize("url", ["http://x", "redis://", "localhost:6379", "amqp://guest@h//"])
def test_malformed_broker_url(url: str) -> None:
    message = config_error(TASKWORKS_BROKER_URL=url)
    assert f"broker_url: got {url!r}" in message
    assert "expected a Redis/Valkey URL" in message


def test_malformed_result_backend() -> None:
    message = config_error(TASKWORKS_RESULT_BACKEND="db+sqlite:///r.db")
    assert "result_backend: got 'db+sqlite:///r.db'" in message
    assert "expected a Redis/Valkey URL" in message


@pytest.mark.parametrize(("url", "expected"), [
    ("mysql://x", "expected a database of kind sqlite or postgresql"),
    ("not a url", "expected a SQLAlchemy URL"),
])
def test_malformed_database_url(url: str, expected: str) -> None:
    message = config_error(TASKWORKS_DATABASE_URL=url)
    assert f"database_url: got {url!r}" in message
    assert expected in message


def test_accepted_urls() -> None:
    settings = load_settings(
        broker_url="rediss://:pw@cache.example:6380/2", result_backend="valkey://h/1",
        database_url="postgresql+psycopg://u@db/app",
    )
    assert settings.embedded is False
    # the form kombu, Celery and redis-py all read alike (taskworks/broker/urls.py):
    # rediss:// verifies the certificate, valkey:// is redis://
    assert settings.effective_broker_url == (
        "rediss://:pw@cache.example:6380/2?ssl_cert_reqs=required")
    assert settings.effective_result_backend == "redis://h/1"
    assert settings.effective_database_url == "postgresql+psycopg://u@db/app"


@pytest.mark.parametrize(("setting", "url", "expected"), [
    ("BROKER_URL", "unix:///run/valkey.sock?password=s3cret",
     "unix:// sockets are not supported"),
    ("BROKER_URL", "redis://:s3cret@cache:6379/0?ssl_ca_certs=/etc/ca.pem",
     "expected rediss:// (or valkeys://) with TLS parameters (ssl_ca_certs)"),
    ("BROKER_URL", "rediss://:s3cret@cache:6380/0?ssl_cert_reqs=yes",
     "expected ssl_cert_reqs to be one of required, optional, none (got 'yes'"),
    ("RESULT_BACKEND", "valkeys://u:s3cret@cache:6380/1?ssl_cert_reqs=CERT_NONE",
     "expected ssl_cert_reqs to be one of required, optional, none"),
])
def test_broker_urls_no_client_reads_alike_are_refused(setting: str, url: str,
                                                        expected: str) -> None:
    message = config_error(**{f"TASKWORKS_{setting}": url})
    assert f"{setting.lower()}: got {redact_url(url)!r}: expected" in message
    assert expected in message
    assert "s3cret" not in message  # the value is named, its password hidden


def test_route_to_unknown_queue() -> None:
    message = config_error(TASKWORKS_ROUTES=json.dumps({"reports.*": "nosuch"}))
    assert "routes['reports.*'] names unknown queue 'nosuch'" in message
    assert "known queues: default, cpu_intensive, io_intensive, priority, scheduled" in message


def test_default_queue_and_worker_group_must_be_known() -> None:
    message = config_error(TASKWORKS_DEFAULT_QUEUE="main",
                           TASKWORKS_WORKER_GROUPS=json.dumps({"g": {"queues": ["gone"]}}))
    assert "default_queue 'main' is not in queues" in message
    assert "worker_groups['g'] names unknown queue 'gone'" in message


@pytest.mark.parametrize("cron", ["bad cron", "0 2 * * * *", "61 * * * *", "0 2 * * mon-xyz"])
def test_beat_entry_with_bad_cron(cron: str) -> None:
    message = config_error(
        TASKWORKS_BEAT_SCHEDULE=json.dumps({"nightly": {"task": "x.y", "cron": cron}})
    )
    assert f"beat_schedule.nightly.cron: got {cron!r}" in message
    assert "expected five crontab fields like '0 2 * * *'" in message


@pytest.mark.parametrize("entry", [
    {"task": "x.y"}, {"task": "x.y", "every": 5, "cron": "* * * * *"},
])
def test_beat_entry_needs_exactly_one_schedule(entry: dict[str, Any]) -> None:
    message = config_error(TASKWORKS_BEAT_SCHEDULE=json.dumps({"tick": entry}))
    assert "beat_schedule.tick" in message
    assert "give exactly one of 'every' (seconds) or 'cron'" in message


def test_beat_entry_on_unknown_queue() -> None:
    message = config_error(TASKWORKS_BEAT_SCHEDULE=json.dumps(
        {"tick": {"task": "x.y", "every": 5, "queue": "elsewhere"}}))
    assert "beat_schedule['tick'].queue names unknown queue 'elsewhere'" in message


@pytest.mark.parametrize(("soft", "hard"), [("1800", "1800"), ("2000", "1800")])
def test_soft_time_limit_must_be_below_time_limit(soft: str, hard: str) -> None:
    message = config_error(TASKWORKS_WORKER__SOFT_TIME_LIMIT=soft,
                           TASKWORKS_WORKER__TIME_LIMIT=hard)
    assert "worker:" in message
    assert f"soft_time_limit ({float(soft)}) must be below time_limit ({float(hard)})" in message


def test_out_of_range_port() -> None:
    message = config_error(TASKWORKS_EMBEDDED_PORT="70000")
    assert "embedded_port: got '70000'" in message
    assert "less than or equal to 65535" in message


def test_several_problems_reported_at_once() -> None:
    message = config_error(
        TASKWORKS_BROKER_URL="http://x",
        TASKWORKS_DATABASE_URL="mysql://x",
        TASKWORKS_EMBEDDED_PORT="0",
        TASKWORKS_LOG_LEVEL="LOUD",
    )
    lines = message.splitlines()
    assert lines[0] == "invalid taskworks settings (env TASKWORKS_*, taskworks.toml):"
    problems = [line.strip() for line in lines[1:]]
    assert len(problems) == 4
    assert problems[0].startswith("broker_url: got 'http://x': expected")
    assert problems[1].startswith("database_url: got 'mysql://x': expected")
    assert problems[2].startswith("embedded_port: got '0':")
    assert problems[3].startswith("log_level: got 'LOUD':")


def test_env_value_that_is_not_json_is_named() -> None:
    # regression: the message was only 'error parsing value for field "routes" from
    # source "EnvSettingsSource"': neither the value nor that JSON was expected
    message = config_error(TASKWORKS_ROUTES="{bad")
    assert "routes" in message
    assert "'{bad'" in message
    assert "expected" in message
    assert "JSON" in message


def test_config_file_that_is_not_toml_names_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # regression: the message was only 'invalid taskworks settings: Invalid value (at
    # end of document)': which file is broken was left for the user to guess
    path = tmp_path / "broken.toml"
    path.write_text("embedded_port = [\n")
    monkeypatch.setenv("TASKWORKS_CONFIG_FILE", str(path))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(path) in str(info.value)
    assert "TOML" in str(info.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
    ("rediss://:s3cret@cache:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required",
     "rediss://:***@cache:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"),
    ("redis://:s3cret@cache:notaport/0", "redis://:***@cache:notaport/0"),  # no parser takes it
    ("redis://u:s3@cret@cache/0", "redis://u:***@cache/0"),  # an @ left unencoded
    ("postgresql://u:s3cret@db/app", "postgresql://u:***@db/app"),
    ("redis://h:1/0", "redis://h:1/0"),
])
def test_redact_url_hides_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("url", [
    "unix:///run/valkey.sock?password=s3cret",  # redis-py's way to pass a socket's password
    "redis://cache:6379/0?password=s3cret",
    "postgresql://u@db/app?password=s3cret",  # libpq/psycopg accept it as a parameter
])
def test_redact_url_hides_a_password_in_the_query(url: str) -> None:
    # regression: only the user:password@ part was hidden
    assert "s3cret" not in redact_url(url)


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.embedded_port = 1  # type: ignore[misc]
    assert isinstance(settings, Settings)


# -- topology helpers --------------------------------------------------------------------


@pytest.mark.parametrize(("mine", "kombu"), [(9, 0), (0, 9), (5, 4), (1, 8)])
def test_broker_priority_flips_the_scale(mine: int, kombu: int) -> None:
    assert topology.broker_priority(mine) == kombu
    assert topology.user_priority(kombu) == mine


@pytest.mark.parametrize("bad", [10, -1, "5", True, 4.0, None])
def test_broker_priority_rejects(bad: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        topology.broker_priority(bad)
    assert info.value.field == "priority"
    assert info.value.value is bad
    assert str(info.value) == (
        f"priority: got {bad!r}, expected an integer from 0 (least urgent) to 9 (most)"
    )


def test_route_for_seed_routes() -> None:
    settings = load_settings()
    assert topology.route_for(settings, "tasks.cpu_intensive.crunch") == "cpu_intensive"
    assert topology.route_for(settings, "tasks.io_intensive.fetch.deep") == "io_intensive"
    assert topology.route_for(settings, "tasks.priority.alert") == "priority"
    assert topology.route_for(settings, "tasks.scheduled.nightly") == "scheduled"
    assert topology.route_for(settings, "tests.record") is None
    # globs are case-sensitive and anchored
    assert topology.route_for(settings, "Tasks.priority.alert") is None
    assert topology.route_for(settings, "my.tasks.priority.alert") is None


def test_route_for_first_match_wins() -> None:
    settings = load_settings(routes={"a.*": "priority", "a.b.*": "cpu_intensive", "?.z": "default"})
    assert topology.route_for(settings, "a.b.c") == "priority"
    assert topology.route_for(settings, "q.z") == "default"
    assert topology.route_for(settings, "qq.z") is None
