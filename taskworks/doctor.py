"""``taskworks doctor``: the effective configuration, and whether it can work.

The visibility timeout check matters most: on Redis a reserved message that is not
acknowledged within ``visibility_timeout`` is handed to another worker, so a task that
may run (or wait on a countdown) longer than that would run twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskworks.settings import redact_url
from taskworks.tasks.builtin import probe_broker, probe_database

if TYPE_CHECKING:
    from taskworks.app import Taskworks


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
    settings = tw.settings
    data = settings.model_dump(mode="json")
    data["broker_url"] = redact_url(settings.effective_broker_url)
    data["result_backend"] = redact_url(settings.effective_result_backend)
    data["database_url"] = redact_url(settings.effective_database_url)
    data["embedded_broker"] = settings.embedded
    return data


def time_limits(tw: Taskworks) -> dict[str, float]:
    """Every time limit and countdown that must stay under the visibility timeout."""
    limits: dict[str, float] = {
        "worker.time_limit": tw.settings.worker.time_limit,
        "max_countdown": float(tw.settings.max_countdown),
    }
    for name, task in sorted(tw.app.tasks.items()):
        if name.startswith("celery."):
            continue
        for attr in ("time_limit", "soft_time_limit"):
            value = getattr(task, attr, None)
            if value:
                limits[f"{name}.{attr}"] = float(value)
    return limits


def check_visibility(tw: Taskworks) -> Check:
    vt = float(tw.settings.visibility_timeout)
    too_long = {k: v for k, v in time_limits(tw).items() if v >= vt}
    if too_long:
        listed = ", ".join(f"{k}={v:g}s" for k, v in too_long.items())
        return Check("visibility_timeout", False,
                     f"{vt:g}s does not exceed {listed}: those tasks could run twice; "
                     f"raise TASKWORKS_VISIBILITY_TIMEOUT")
    return Check("visibility_timeout", True,
                 f"{vt:g}s exceeds every time limit and countdown "
                 f"(longest {max(time_limits(tw).values()):g}s)")


def diagnose(tw: Taskworks) -> Report:
    report = Report(configuration(tw))
    broker = probe_broker(tw.app.conf.broker_url)
    report.checks.append(Check("broker", bool(broker["ok"]), str(
        broker.get("error") or f"answers in {broker['latency_ms']} ms")))
    database = probe_database(tw)
    report.checks.append(Check("database", bool(database["ok"]), str(
        database.get("error") or f"answers in {database['latency_ms']} ms")))
    report.checks.append(check_visibility(tw))
    return report
