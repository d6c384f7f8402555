"""The patterns guide's task patterns, on the taskworks runtime.

``register(tw)`` declares them on any Taskworks instance (the demo's, the tests'):

    examples.process_large_dataset    iterate a dataset with progress, store the result
    examples.send_notification_email  a real SMTP send, every attempt in email_logs
    examples.generate_report          four phases with progress, a file under data_dir
    examples.batch_process_users      batches fanned out as a chord; the callback counts
    examples.process_user_batch       one batch of the users table
    examples.collect_user_batches     the chord's callback
    examples.conditional_processing   rules and named predicates decide what to submit

What changed from the patterns guide: retries are the runtime's retry policies (no decorator
loops), errors are the runtime's journal and dead-letter store (no FAILURE state written
by hand), no task waits on another (``.get()`` in a task starves the pool: the batch
task replaces itself with a chord), predicates come from a registry (no ``globals()``),
results are JSON (no pickle). The tables are the example's own (examples/tables.py),
created with ``tables.create_tables(tw)``: they are not part of taskworks' schema.
"""

from __future__ import annotations

import hashlib
import json
import os
import smtplib
import ssl
import statistics
import string
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any

from celery import chord, group
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from examples.conditions import check, evaluate, predicate
from examples.tables import datasets, email_logs, processing_results, users
from taskworks.errors import InvalidInput
from taskworks.notify.channels import MAIL_POLICY
from taskworks.runtime.progress import progress
from taskworks.runtime.retry import NEVER_RETRY, RetryPolicy
from taskworks.settings import EmailSettings

if TYPE_CHECKING:
    from taskworks.app import Taskworks

PROCESS_DATASET = "examples.process_large_dataset"
SEND_EMAIL = "examples.send_notification_email"
GENERATE_REPORT = "examples.generate_report"
BATCH_USERS = "examples.batch_process_users"
USER_BATCH = "examples.process_user_batch"
COLLECT_BATCHES = "examples.collect_user_batches"
CONDITIONAL = "examples.conditional_processing"

#: bad input fails the same way every time: straight to the dead-letter store
POLICY = RetryPolicy(max_retries=3, base_delay=0.5, max_delay=30,
                     never_retry=(*NEVER_RETRY, InvalidInput))

def now() -> datetime:
    return datetime.now(UTC)


def _attempt(task: Any) -> int:
    return int(task.request.retries or 0) + 1


# -- process_large_dataset -----------------------------------------------------------
DATASET_OPTIONS = {
    "normalize": "strip and lower-case every string value",
    "validate": "count items lacking a required field as invalid",
    "required": "the fields validate requires (default ['id'])",
    "fingerprint_rounds": "sha256 rounds of each item's fingerprint (CPU work)",
    "progress_every": "publish progress every this many items (default 10)",
}


def _dataset_options(options: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(options, Mapping):
        raise InvalidInput("processing_options", options, "a JSON object")
    unknown = sorted(set(options) - set(DATASET_OPTIONS))
    if unknown:
        raise InvalidInput("processing_options", unknown[0],
                           f"one of {', '.join(DATASET_OPTIONS)}")
    merged = {"normalize": False, "validate": False, "required": ["id"],
              "fingerprint_rounds": 0, "progress_every": 10, **options}
    for key, low in (("fingerprint_rounds", 0), ("progress_every", 1)):
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InvalidInput(f"processing_options.{key}", value, f"a whole number >= {low}")
    required = merged["required"]
    if not isinstance(required, list) or not all(isinstance(f, str) for f in required):
        raise InvalidInput("processing_options.required", required, "a list of field names")
    return merged


def process_item(item: Any, options: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """One item processed, and whether it is valid (the patterns guide's process_single_item)."""
    processed = dict(item) if isinstance(item, Mapping) else {"value": item}
    if options["normalize"]:
        processed = {k: v.strip().lower() if isinstance(v, str) else v
                     for k, v in processed.items()}
    valid = not options["validate"] or all(
        processed.get(field) not in (None, "") for field in options["required"])
    digest = json.dumps(processed, sort_keys=True, default=str).encode()
    for _ in range(options["fingerprint_rounds"]):
        digest = hashlib.sha256(digest).digest()
    if options["fingerprint_rounds"]:
        processed["fingerprint"] = digest.hex()[:16]
    return processed, valid


def process_large_dataset(tw: Taskworks, task_id: str, dataset_id: int,
                          processing_options: Mapping[str, Any]) -> dict[str, Any]:
    options = _dataset_options(processing_options)
    with tw.store.engine.connect() as conn:
        done = conn.execute(select(processing_results.c.result_data)
                            .where(processing_results.c.task_id == task_id)).scalar()
        if done is not None:
            return dict(done)  # a redelivery of a task that already stored its result
        items = conn.execute(select(datasets.c.data)
                             .where(datasets.c.id == dataset_id)).scalar()
    if items is None:
        raise InvalidInput("dataset_id", dataset_id, "the id of a row in example_datasets")
    total = len(items)
    progress(0, total, "Starting processing...")
    checksum = hashlib.sha256()
    invalid = 0
    for i, item in enumerate(items, start=1):
        processed, valid = process_item(item, options)
        invalid += not valid
        checksum.update(json.dumps(processed, sort_keys=True, default=str).encode())
        if i % options["progress_every"] == 0 or i == total:
            progress(i, total, f"Processed {i}/{total} items")
    result = {
        "dataset_id": dataset_id, "processed_count": total, "invalid_count": invalid,
        "checksum": checksum.hexdigest()[:16], "processing_options": dict(processing_options),
        "finished_at": now().isoformat(),
    }
    try:
        with tw.store.engine.begin() as conn:
            conn.execute(insert(processing_results).values(
                task_id=task_id, dataset_id=dataset_id, processed_count=total,
                result_data=result, created_at=now()))
    except IntegrityError:
        pass  # a twin delivery stored the same result first
    return result


# -- send_notification_email ---------------------------------------------------------
#: bodies by template id (string.Template: ``$body`` only, no code, no attribute access)
TEMPLATES = {
    "plain": "$body\n",
    "welcome": "Welcome aboard!\n\n$body\n\n-- the taskworks examples team\n",
}


def _one_line(field: str, value: object) -> str:
    if not isinstance(value, str) or not value or "\r" in value or "\n" in value:
        raise InvalidInput(field, value, "a non-empty string on one line")
    return value


def email_settings(tw: Taskworks, host: str | None, port: int | None) -> EmailSettings:
    """``notify.email`` (TLS, credentials, sender), with host and port as given."""
    base = tw.settings.notify.email or EmailSettings()
    update: dict[str, Any] = {}
    if host is not None:
        update["host"] = _one_line("smtp_host", host)
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise InvalidInput("smtp_port", port, "a port number from 1 to 65535")
        update["port"] = port
    return base.model_copy(update=update)


def send_mail(settings: EmailSettings, recipient: str, subject: str, body: str) -> None:
    """One message through SMTP (stdlib smtplib), with the settings' TLS and login."""
    msg = EmailMessage(policy=MAIL_POLICY)
    msg["Subject"] = subject
    msg["From"] = settings.sender
    msg["To"] = recipient
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=settings.sender.rpartition("@")[2] or "taskworks")
    msg.set_content(body)
    context = ssl.create_default_context()
    smtp = (smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout,
                             context=context)
            if settings.tls == "ssl"
            else smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout))
    with smtp:
        if settings.tls == "starttls":
            smtp.starttls(context=context)
        if settings.username:
            smtp.login(settings.username, settings.password or "")
        smtp.send_message(msg)


def send_notification_email(tw: Taskworks, task: Any, recipient: str, subject: str, body: str,
                            template_id: str | None, smtp_host: str | None,
                            smtp_port: int | None) -> dict[str, Any]:
    _one_line("recipient", recipient)
    if "@" not in recipient or " " in recipient:
        raise InvalidInput("recipient", recipient, "an email address")
    _one_line("subject", subject)
    if not isinstance(body, str):
        raise InvalidInput("body", body, "a string")
    if template_id is not None:
        if template_id not in TEMPLATES:
            raise InvalidInput("template_id", template_id, f"one of {', '.join(TEMPLATES)}")
        body = string.Template(TEMPLATES[template_id]).safe_substitute(body=body)
    settings = email_settings(tw, smtp_host, smtp_port)
    row = {"task_id": task.request.id, "attempt": _attempt(task), "recipient": recipient,
           "subject": subject}
    try:
        send_mail(settings, recipient, subject, body)
    except (smtplib.SMTPException, OSError) as exc:  # SMTPException is an OSError too
        with tw.store.engine.begin() as conn:
            conn.execute(insert(email_logs).values(
                **row, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000],
                sent_at=now()))
        raise  # the retry policy decides: retried with backoff, then the dead-letter store
    with tw.store.engine.begin() as conn:
        conn.execute(insert(email_logs).values(**row, status="sent", sent_at=now()))
    return {"status": "sent", "recipient": recipient, "smtp": f"{settings.host}:{settings.port}",
            "attempt": row["attempt"]}


# -- generate_report -----------------------------------------------------------------
def _user_activity() -> tuple[Any, Callable[[list[Any]], dict[str, Any]]]:
    stmt = select(users.c.is_active, func.count()).group_by(users.c.is_active)

    def analyze(rows: list[Any]) -> dict[str, Any]:
        counts = {bool(active): int(n) for active, n in rows}
        total = sum(counts.values())
        active = counts.get(True, 0)
        return {"users": total, "active": active, "inactive": counts.get(False, 0),
                "active_percent": round(active / total * 100, 1) if total else 0.0}

    return stmt, analyze


def _processing_summary() -> tuple[Any, Callable[[list[Any]], dict[str, Any]]]:
    stmt = select(processing_results.c.processed_count)

    def analyze(rows: list[Any]) -> dict[str, Any]:
        counts = [int(n) for (n,) in rows]
        return {"runs": len(counts), "items": sum(counts),
                "mean_items": round(statistics.fmean(counts), 1) if counts else 0.0,
                "median_items": statistics.median(counts) if counts else 0}

    return stmt, analyze


def _email_delivery() -> tuple[Any, Callable[[list[Any]], dict[str, Any]]]:
    stmt = select(email_logs.c.status, func.count()).group_by(email_logs.c.status)

    def analyze(rows: list[Any]) -> dict[str, Any]:
        counts = {str(status): int(n) for status, n in rows}
        attempts = sum(counts.values())
        return {"attempts": attempts, **counts, "failure_percent":
                round(counts.get("failed", 0) / attempts * 100, 1) if attempts else 0.0}

    return stmt, analyze


#: report kinds by name: the query that collects, the function that analyzes
REPORTS: dict[str, Callable[[], tuple[Any, Callable[[list[Any]], dict[str, Any]]]]] = {
    "user_activity": _user_activity,
    "processing_summary": _processing_summary,
    "email_delivery": _email_delivery,
}
REPORT_FORMATS = ("markdown", "json")


def render(report_type: str, title: str, analysis: Mapping[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"report": report_type, "title": title, **analysis}, indent=2) + "\n"
    lines = [f"# {title}", "", "| measure | value |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in analysis.items()]
    return "\n".join(lines) + "\n"


def generate_report(tw: Taskworks, task_id: str, report_type: str,
                    parameters: Mapping[str, Any]) -> dict[str, Any]:
    if report_type not in REPORTS:
        raise InvalidInput("report_type", report_type, f"one of {', '.join(REPORTS)}")
    if not isinstance(parameters, Mapping) or set(parameters) - {"title", "format"}:
        raise InvalidInput("parameters", parameters, "a JSON object with 'title' and/or 'format'")
    fmt = parameters.get("format", "markdown")
    if fmt not in REPORT_FORMATS:
        raise InvalidInput("parameters.format", fmt, f"one of {', '.join(REPORT_FORMATS)}")
    title = str(parameters.get("title") or report_type.replace("_", " ").capitalize())
    progress(0, 100, "Initializing report generation...")
    stmt, analyze = REPORTS[report_type]()
    progress(25, 100, "Collecting data...")
    with tw.store.engine.connect() as conn:
        rows = list(conn.execute(stmt))
    progress(50, 100, "Analyzing data...")
    analysis = analyze(rows)
    progress(75, 100, "Generating report...")
    content = render(report_type, title, analysis, fmt)
    progress(90, 100, "Saving report...")
    folder = tw.settings.data_dir / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = now().strftime("%Y%m%dT%H%M%S")
    path = (folder / f"{report_type}-{stamp}-{task_id[:8]}.{'md' if fmt == 'markdown' else 'json'}")
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(content, encoding="utf-8")
    os.replace(partial, path)  # readers never see half a report
    return {"report_type": report_type, "file_path": str(path.resolve()),
            "parameters": dict(parameters), "summary": analysis,
            "generated_at": now().isoformat()}


# -- batch_process_users -------------------------------------------------------------
OPERATIONS = ("activate", "deactivate", "delete")


def check_user_ids(user_ids: object) -> list[int]:
    if not isinstance(user_ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in user_ids):
        raise InvalidInput("user_ids", user_ids, "a list of integer user ids")
    return user_ids


def check_operation(operation: object) -> str:
    if operation not in OPERATIONS:
        raise InvalidInput("operation", operation, f"one of {', '.join(OPERATIONS)}")
    return str(operation)


def process_user_batch(tw: Taskworks, user_ids: list[int], operation: str) -> dict[str, Any]:
    """One transaction for the batch; ids with no user are counted as failed."""
    ids = check_user_ids(user_ids)
    check_operation(operation)
    with tw.store.engine.begin() as conn:
        existing = set(conn.scalars(select(users.c.id).where(users.c.id.in_(ids))))
        if operation == "delete":
            conn.execute(delete(users).where(users.c.id.in_(existing)))
        else:
            conn.execute(update(users).where(users.c.id.in_(existing))
                         .values(is_active=operation == "activate", updated_at=now()))
    missing = [i for i in ids if i not in existing]
    return {"processed": len(ids) - len(missing), "failed": len(missing), "failed_ids": missing}


def collect_user_batches(results: Sequence[Mapping[str, Any]], total_users: int,
                         operation: str) -> dict[str, Any]:
    return {
        "total_users": total_users, "operation": operation, "batches": len(results),
        "processed": sum(int(r["processed"]) for r in results),
        "failed": sum(int(r["failed"]) for r in results),
        "failed_ids": sorted(i for r in results for i in r["failed_ids"]),
    }


def batches(user_ids: list[int], batch_size: int) -> list[list[int]]:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput("batch_size", batch_size, "an integer >= 1")
    return [user_ids[i:i + batch_size] for i in range(0, len(user_ids), batch_size)]


# -- conditional_processing ----------------------------------------------------------
def conditional_processing(tw: Taskworks, data: Mapping[str, Any],
                           conditions: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Evaluate every condition; submit the task of each one met.

    Every condition is checked before anything is submitted, so a malformed one never
    leaves half of the work sent.
    """
    if not isinstance(data, Mapping):
        raise InvalidInput("data", data, "a JSON object")
    if not isinstance(conditions, Mapping):
        raise InvalidInput("conditions", conditions, "a JSON object of named conditions")
    for name, config in conditions.items():
        if not isinstance(config, Mapping) or not {"type", "params", "task"} <= set(config):
            raise InvalidInput(f"conditions.{name}", config,
                               "an object with 'type', 'params', 'task' (and 'task_params')")
        check(config["type"], config["params"])
        if config["task"] not in tw.app.tasks:
            raise InvalidInput(f"conditions.{name}.task", config["task"],
                               "the name of a registered task")
        if not isinstance(config.get("task_params", {}), Mapping):
            raise InvalidInput(f"conditions.{name}.task_params", config["task_params"],
                               "a JSON object of keyword arguments")
    outcome: list[dict[str, Any]] = []
    for name, config in conditions.items():
        if not evaluate(data, config["type"], config["params"]):
            outcome.append({"condition": name, "task": config["task"], "status": "skipped"})
            continue
        sent = tw.submit(config["task"], kwargs=dict(config.get("task_params", {})))
        outcome.append({"condition": name, "task": config["task"], "task_id": sent.id,
                        "status": "scheduled"})
    return outcome


# predicates the examples use in custom_function rules, registered by name
FREE_MAIL = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com")


@predicate("is_business_email")
def is_business_email(data: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    email = data.get("email")
    if not isinstance(email, str) or "@" not in email:
        return False
    return email.rpartition("@")[2].lower() not in params.get("free_domains", FREE_MAIL)


@predicate("inactive_for_days")
def inactive_for_days(data: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    days = data.get("days_since_login")
    return isinstance(days, int) and days >= int(params.get("days", 90))


# -- declaring the tasks -------------------------------------------------------------
def register(tw: Taskworks) -> None:
    """Declare the example tasks on ``tw``."""

    @tw.task(name=PROCESS_DATASET, bind=True, retry_policy=POLICY)
    def _process_large_dataset(self: Any, dataset_id: int,
                               processing_options: dict[str, Any] | None = None
                               ) -> dict[str, Any]:
        return process_large_dataset(tw, self.request.id, dataset_id, processing_options or {})

    @tw.task(name=SEND_EMAIL, bind=True, queue="io_intensive", retry_policy=POLICY)
    def _send_notification_email(self: Any, recipient: str, subject: str, body: str,
                                 template_id: str | None = None, smtp_host: str | None = None,
                                 smtp_port: int | None = None) -> dict[str, Any]:
        return send_notification_email(tw, self, recipient, subject, body, template_id,
                                       smtp_host, smtp_port)

    @tw.task(name=GENERATE_REPORT, bind=True, queue="cpu_intensive", retry_policy=POLICY)
    def _generate_report(self: Any, report_type: str,
                         parameters: dict[str, Any] | None = None) -> dict[str, Any]:
        return generate_report(tw, self.request.id, report_type, parameters or {})

    @tw.task(name=USER_BATCH, retry_policy=POLICY)
    def _process_user_batch(user_ids: list[int], operation: str) -> dict[str, Any]:
        return process_user_batch(tw, user_ids, operation)

    @tw.task(name=COLLECT_BATCHES, retry_policy=POLICY)
    def _collect_user_batches(results: list[dict[str, Any]], total_users: int,
                              operation: str) -> dict[str, Any]:
        return collect_user_batches(results, total_users, operation)

    @tw.task(name=BATCH_USERS, bind=True, retry_policy=POLICY)
    def _batch_process_users(self: Any, user_ids: list[int], operation: str,
                             batch_size: int = 100) -> Any:
        ids = check_user_ids(user_ids)
        check_operation(operation)
        parts = batches(ids, batch_size)
        if not parts:
            return collect_user_batches([], 0, operation)
        # no waiting here: this task becomes the chord; its callback's result is this
        # task's result, so the caller's AsyncResult gets the counts
        header = group(_process_user_batch.s(part, operation) for part in parts)
        return self.replace(chord(header, _collect_user_batches.s(len(ids), operation)))

    @tw.task(name=CONDITIONAL, retry_policy=POLICY)
    def _conditional_processing(data: dict[str, Any], conditions: dict[str, Any]
                                ) -> list[dict[str, Any]]:
        return conditional_processing(tw, data, conditions)
