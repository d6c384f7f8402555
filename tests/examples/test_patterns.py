"""Each of the patterns guide's task patterns on a real worker, real Valkey, real store and SMTP."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope, Session
from celery import states
from sqlalchemy import select

from examples import patterns, tables
from examples.tables import email_logs, processing_results, users
from taskworks.errors import TaskworksError
from taskworks.runtime import journal
from taskworks.runtime.dlq import DeadLetterFilter
from tests.notify import SmtpSink, smtp_server
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess


def rows(tw: Any, table: Any) -> list[Any]:
    with tw.store.engine.connect() as conn:
        return list(conn.execute(select(table).order_by(*table.primary_key.columns)))


def test_process_large_dataset_publishes_progress_and_stores_its_result(
        tw: Any, worker: WorkerProcess) -> None:
    items = [{"id": i, "name": f"  Item {i} "} for i in range(1, 301)]
    items[7]["id"] = None  # invalid: no id
    tables.seed_dataset(tw, 1, "things", items)
    options = {"normalize": True, "validate": True, "fingerprint_rounds": 3000}
    sent = tw.submit(patterns.PROCESS_DATASET, [1, options])

    seen: list[tuple[str, float | None]] = []

    def finished() -> bool:
        snapshot = tw.progress(sent.id)
        if not seen or seen[-1] != (snapshot.state, snapshot.current):
            seen.append((snapshot.state, snapshot.current))
        return snapshot.ready

    wait_for(finished, timeout=60, interval=0.01, what="the dataset task")
    result = sent.get(timeout=5)
    assert (result["processed_count"], result["invalid_count"]) == (300, 1)
    midway = [current for state, current in seen if state == "PROGRESS"]
    assert midway, f"no progress seen: {seen}"
    assert midway == sorted(midway)
    assert all(current is not None and current % 10 == 0 for current in midway)
    assert seen[-1] == (states.SUCCESS, None)
    [row] = rows(tw, processing_results)
    assert (row.task_id, row.dataset_id, row.processed_count) == (sent.id, 1, 300)
    assert row.result_data == result


def test_a_missing_dataset_is_dead_lettered_at_once_and_replays(
        tw: Any, worker: WorkerProcess) -> None:
    sent = tw.submit(patterns.PROCESS_DATASET, [42, {"validate": True}])
    sent.get(timeout=30, propagate=False)
    assert sent.state == states.FAILURE
    letter = wait_for(lambda: tw.dead_letters.find(DeadLetterFilter(
        task=patterns.PROCESS_DATASET)), what="the dead letter")[0]
    # bad input is never retried: one attempt, straight to the store
    assert (letter.task_id, letter.exc_type, letter.reason, letter.attempts) == (
        sent.id, "InvalidInput", "not_retryable", 1)
    assert "dataset_id: got 42" in letter.exc_message

    tables.seed_dataset(tw, 42, "late upload", [{"id": 1}, {"id": 2}])
    new_id = tw.dead_letters.replay([letter.id])[letter.id]
    assert tw.app.AsyncResult(new_id).get(timeout=30)["processed_count"] == 2


class FlakySmtp(SmtpSink):
    """Answers 451 (try again later) to the first ``busy`` messages, then accepts."""

    def __init__(self, busy: int) -> None:
        super().__init__()
        self.busy = busy

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.busy > 0:
            self.busy -= 1
            return "451 4.3.0 mailbox busy, try again later"
        return await super().handle_DATA(server, session, envelope)


def test_email_goes_through_smtp_and_every_attempt_is_logged(
        tw: Any, worker: WorkerProcess) -> None:
    sink = FlakySmtp(busy=1)
    with smtp_server(sink) as port:
        sent = tw.submit(patterns.SEND_EMAIL, ["ana@example.org", "Your export is ready",
                                               "It has 3 files."],
                         {"template_id": "welcome", "smtp_host": "127.0.0.1",
                          "smtp_port": port})
        result = sent.get(timeout=60)
    assert (result["status"], result["attempt"]) == ("sent", 2)
    [msg] = sink.messages
    assert msg["To"] == "ana@example.org"
    assert msg["Subject"] == "Your export is ready"
    body = msg.get_content()
    assert "Welcome aboard!" in body
    assert "It has 3 files." in body
    logged = [(r.task_id, r.attempt, r.status) for r in rows(tw, email_logs)]
    assert logged == [(sent.id, 1, "failed"), (sent.id, 2, "sent")]
    assert "451" in rows(tw, email_logs)[0].error
    attempts = wait_for(lambda: len(journal.attempts(tw.store, sent.id)) == 2
                        and journal.attempts(tw.store, sent.id), what="2 journal rows")
    assert [(a.state, a.queue) for a in attempts] == [("retry", "io_intensive"),
                                                      ("success", "io_intensive")]


def test_generate_report_runs_on_cpu_intensive_and_writes_its_file(
        tw: Any, worker: WorkerProcess) -> None:
    tables.seed_users(tw, 4)
    with tw.store.engine.begin() as conn:
        conn.execute(users.update().where(users.c.id == 1).values(is_active=False))
    sent = tw.submit(patterns.GENERATE_REPORT, ["user_activity", {"format": "json"}])
    result = sent.get(timeout=30)
    assert result["summary"] == {"users": 4, "active": 3, "inactive": 1,
                                 "active_percent": 75.0}
    path = Path(result["file_path"])
    assert path.parent == (tw.settings.data_dir / "reports").resolve()
    assert json.loads(path.read_text())["active"] == 3
    assert not list(path.parent.glob("*.partial"))
    [attempt] = wait_for(lambda: journal.attempts(tw.store, sent.id), what="journal row")
    assert attempt.queue == "cpu_intensive"


def test_batch_process_users_counts_every_batch(tw: Any, worker: WorkerProcess) -> None:
    ids = tables.seed_users(tw, 23)
    wanted = [*ids, 900, 901, 902]  # three users that do not exist
    sent = tw.submit(patterns.BATCH_USERS, [wanted, "deactivate"], {"batch_size": 5})
    result = sent.get(timeout=60)
    assert result == {"total_users": 26, "operation": "deactivate", "batches": 6,
                      "processed": 23, "failed": 3, "failed_ids": [900, 901, 902]}
    assert {r.is_active for r in rows(tw, users)} == {False}
    batch_rows = wait_for(lambda: len(journal.query(tw.store, journal.JournalQuery(
        task=patterns.USER_BATCH))) == 6, what="6 batch journal rows")
    assert batch_rows

    deleted = tw.submit(patterns.BATCH_USERS, [ids[:10], "delete"], {"batch_size": 4})
    assert deleted.get(timeout=60)["processed"] == 10
    assert len(rows(tw, users)) == 13


def test_conditional_processing_submits_what_the_rules_select(
        tw: Any, worker: WorkerProcess) -> None:
    tables.seed_users(tw, 2)
    data = {"user_id": 1, "email": "ana@acme.io", "days_since_login": 120, "plan": "free"}
    conditions = {
        "dormant": {"type": "custom_function", "params": {"function": "inactive_for_days",
                                                          "days": 90},
                    "task": patterns.USER_BATCH,
                    "task_params": {"user_ids": [1], "operation": "deactivate"}},
        "pro_plan": {"type": "value_equals", "params": {"field": "plan", "value": "pro"},
                     "task": patterns.USER_BATCH,
                     "task_params": {"user_ids": [2], "operation": "deactivate"}},
    }
    outcome = tw.submit(patterns.CONDITIONAL, [data, conditions]).get(timeout=30)
    assert [(o["condition"], o["status"]) for o in outcome] == [("dormant", "scheduled"),
                                                                ("pro_plan", "skipped")]
    scheduled = tw.app.AsyncResult(outcome[0]["task_id"]).get(timeout=30)
    assert scheduled["processed"] == 1
    assert [(r.id, r.is_active) for r in rows(tw, users)] == [(1, False), (2, True)]


def test_conditional_processing_refuses_an_unknown_predicate_before_submitting(
        tw: Any, worker: WorkerProcess) -> None:
    tables.seed_users(tw, 1)
    conditions = {
        "first": {"type": "field_exists", "params": {"field": "user_id"},
                  "task": patterns.USER_BATCH,
                  "task_params": {"user_ids": [1], "operation": "deactivate"}},
        "second": {"type": "custom_function", "params": {"function": "__import__"},
                   "task": patterns.USER_BATCH, "task_params": {}},
    }
    sent = tw.submit(patterns.CONDITIONAL, [{"user_id": 1}, conditions])
    with pytest.raises(TaskworksError, match=r"custom_function\.function: got '__import__'"):
        sent.get(timeout=30)
    letter = wait_for(lambda: tw.dead_letters.find(DeadLetterFilter(
        task=patterns.CONDITIONAL)), what="the dead letter")[0]
    assert (letter.exc_type, letter.reason) == ("InvalidInput", "not_retryable")
    # the valid first condition was not sent either: nothing half-applied
    assert [r.is_active for r in rows(tw, users)] == [True]
    assert journal.query(tw.store, journal.JournalQuery(task=patterns.USER_BATCH)) == []


def test_bad_input_is_refused_by_name_and_never_retried(
        tw: Any, worker: WorkerProcess) -> None:
    tables.seed_dataset(tw, 2, "small", [{"id": 1}])
    cases = [
        (patterns.PROCESS_DATASET, [2, {"normalise": True}], {},
         "processing_options: got 'normalise'"),
        (patterns.SEND_EMAIL, ["ana@example.org", "hi", "body"],
         {"template_id": "nope", "smtp_port": 1}, "template_id: got 'nope'"),
        (patterns.SEND_EMAIL, ["ana@example.org", "two\nlines", "body"], {},
         "subject: got 'two\\nlines'"),
        (patterns.BATCH_USERS, [[1, 2], "archive"], {}, "operation: got 'archive'"),
        (patterns.GENERATE_REPORT, ["sales", {}], {}, "report_type: got 'sales'"),
    ]
    sent = [tw.submit(name, args, kwargs) for name, args, kwargs, _ in cases]
    for result, (_, _, _, message) in zip(sent, cases, strict=True):
        with pytest.raises(TaskworksError, match=re.escape(message)):
            result.get(timeout=30)
    letters = wait_for(lambda: len(tw.dead_letters.find()) == len(cases)
                       and tw.dead_letters.find(), what="a dead letter per case")
    assert {(x.exc_type, x.reason, x.attempts) for x in letters} == {
        ("InvalidInput", "not_retryable", 1)}
    assert rows(tw, email_logs) == []  # refused before any attempt to send
