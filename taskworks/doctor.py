"""``taskworks doctor``: the effective configuration, and whether it can work.

The visibility timeout check matters most: on Redis a reserved message that is not
acknowledged within ``visibility_timeout`` is handed to another worker, so a task that
may run longer than that would run twice. It covers the worker's limits, every task's
limits, and the steps of every registered workflow (registration refuses new ones;
these may predate a lower timeout). Countdowns and retry delays count too for an app
whose transport is not taskworks' (an adopted app's): there a delayed message waits
reserved in a worker; with taskworks' transport it waits in the durable schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from taskworks.broker.transport import keeps_delayed
from taskworks.errors import TaskworksError
from taskworks.redaction import redact_settings, redact_url
from taskworks.tasks.health import probe_broker, probe_database
from taskworks.workflows.validate import unacked_limits

if TYPE_CHECKING:
    from taskworks.app import Taskworks

__all__ = ["Check", "Report", "check_visibility", "configuration", "diagnose", "retry_delays",
           "time_limits", "workflow_limits"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    configuration: dict[str, Any]
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def configuration(tw: Taskworks) -> dict[str, Any]:
    """The settings as doctor prints them: no password, token, header value or URL
    credential (``redact_settings``: keys from SECRET_WORDS and journal.redact_keys)."""
    settings = tw.settings
    data = redact_settings(settings.model_dump(mode="json"), settings.journal.redact_keys)
    data["broker_url"] = redact_url(settings.effective_broker_url)
    data["result_backend"] = redact_url(settings.effective_result_backend)
    data["database_url"] = redact_url(settings.effective_database_url)
    data["embedded_broker"] = settings.embedded
    return data


def time_limits(tw: Taskworks) -> dict[str, float]:
    """Every time limit and countdown that must stay under the visibility timeout."""
    limits: dict[str, float] = {"worker.time_limit": tw.settings.worker.time_limit}
    delays_held = not keeps_delayed(tw.app.conf.broker_transport)
    if delays_held:
        limits["max_countdown"] = float(tw.settings.max_countdown)
    for name, task in sorted(tw.app.tasks.items()):
        if name.startswith("celery."):
            continue
        for attr in ("time_limit", "soft_time_limit"):
            value = getattr(task, attr, None)
            if value:
                limits[f"{name}.{attr}"] = float(value)
    if delays_held:
        limits.update(retry_delays(tw))
    return limits


def retry_delays(tw: Taskworks) -> dict[str, float]:
    """The longest wait before a retry of each task, under taskworks' retry policies:
    ``max_delay``, which a server's Retry-After reaches whatever the backoff
    (runtime/retry.py). The default policy once, then each task whose policy differs."""
    policies = tw.retry_policies
    delays: dict[str, float] = {}
    if policies.default.max_retries > 0:
        delays["retry.max_delay"] = float(policies.default.max_delay)
    for name, task in sorted(tw.app.tasks.items()):
        if name.startswith("celery."):
            continue
        options = getattr(task, "taskworks_options", None) or {}
        declared = getattr(task, "runtime", None) is not None \
            and not getattr(task, "taskworks_adopted", False)
        if not declared and "retry_policy" not in options:
            continue  # an adopted Celery task: Celery's own retry options decide
        policy = policies.for_task(name, options)
        if policy is not policies.default and policy.max_retries > 0:
            delays[f"{name}.retry_policy.max_delay"] = float(policy.max_delay)
    return delays


def workflow_limits(tw: Taskworks) -> dict[str, float]:
    """The steps' own time limits and retry delays of every stored workflow version (a
    run of an older version may still be going)."""
    limits: dict[str, float] = {}
    for name, version, _ in tw.workflows.definitions():
        workflow = tw.workflows.engine.definition(name, version)
        delays = not keeps_delayed(tw.app.conf.broker_transport)
        for where, seconds in unacked_limits(workflow, delays=delays).items():
            limits[f"workflow {name} v{version} {where}"] = seconds
    return limits


def check_visibility(tw: Taskworks) -> Check:
    vt = float(tw.settings.visibility_timeout)
    limits = time_limits(tw)
    unread = ""
    try:
        limits.update(workflow_limits(tw))
    except (TaskworksError, SQLAlchemyError) as exc:
        # the database check reports why the store does not answer
        unread = f"; registered workflows not checked ({type(exc).__name__})"
    too_long = {k: v for k, v in limits.items() if v >= vt}
    if too_long:
        listed = ", ".join(f"{k}={v:g}s" for k, v in too_long.items())
        return Check("visibility_timeout", False,
                     f"{vt:g}s does not exceed {listed}: those tasks could run twice; "
                     f"raise TASKWORKS_VISIBILITY_TIMEOUT or shorten them{unread}")
    what = "time limit, countdown and retry delay" if "max_countdown" in limits \
        else "time limit (delayed tasks wait in the durable schedule)"
    return Check("visibility_timeout", True,
                 f"{vt:g}s exceeds every {what} (longest {max(limits.values()):g}s){unread}")


def diagnose(tw: Taskworks) -> Report:
    report = Report(configuration(tw))
    broker = probe_broker(tw.app.conf.broker_url)
    report.checks.append(Check("broker", bool(broker["ok"]), str(
        broker.get("error") or f"answers in {broker['latency_ms']} ms")))
    database = probe_database(tw.store)
    report.checks.append(Check("database", bool(database["ok"]), str(
        database.get("error") or f"answers in {database['latency_ms']} ms")))
    report.checks.append(check_visibility(tw))
    return report
