"""The runtime section of ``make demo``: the patterns guide's task patterns end to end, and the
runtime at work around them (retry with backoff, dead letter and replay, journal,
progress). Called by examples/demo.py once the stack is up."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import func, select

from examples import patterns, tables
from taskworks.app import Taskworks
from taskworks.runtime import journal
from taskworks.runtime.dlq import DeadLetterFilter
from taskworks.store.tables import JournalEntry

T = TypeVar("T")


def wait(condition: Callable[[], T], timeout: float = 60, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class BusySmtp:
    """A real SMTP server's handler: answers 451 (try later) to the first ``busy``
    messages, then keeps what it is sent."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.busy > 0:
            self.busy -= 1
            return "451 4.3.0 mailbox busy, try again later"
        content = envelope.content
        assert isinstance(content, bytes)
        self.messages.append(message_from_bytes(content, policy=policy.default))
        return "250 OK"


@contextmanager
def smtp_server(handler: BusySmtp) -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()


class RuntimeDemo:
    def __init__(self, tw: Taskworks, console: Console) -> None:
        self.tw = tw
        self.console = console
        self.started = datetime.now(UTC)
        #: ids of the tasks whose final journal row the summary waits for
        self.final_ids: list[str] = []

    def say(self, label: str, text: str) -> None:
        # task data may hold [brackets]: only the label is markup
        self.console.print(f"[bold]{label}[/bold]: {escape(text)}")

    def run(self) -> None:
        tables.create_tables(self.tw)
        tables.clear_tables(self.tw)  # the example's own tables: each run starts afresh
        self.console.rule("task runtime: the patterns guide's task patterns")
        self.dataset_with_progress()
        self.email_with_retries()
        self.batch_users()
        self.report()
        self.conditional()
        self.dead_letter_and_replay()
        self.journal_summary()

    def submit(self, name: str, args: list[Any], kwargs: dict[str, Any] | None = None) -> Any:
        result = self.tw.submit(name, args, kwargs)
        self.final_ids.append(result.id)
        return result

    def dataset_with_progress(self) -> None:
        items = [{"id": i, "name": f"  Sensor {i % 37} ", "reading": i * 0.5}
                 for i in range(1, 801)]
        items[99]["id"] = None
        tables.seed_dataset(self.tw, 1, "sensor readings", items)
        sent = self.submit(patterns.PROCESS_DATASET, [1, {
            "normalize": True, "validate": True, "fingerprint_rounds": 4000,
            "progress_every": 40}])
        snapshots: list[str] = []
        while True:  # read progress from this process while a worker runs the task
            snap = self.tw.progress(sent.id)
            line = f"{snap.state} {snap.percent:5.1f}% {snap.status}"
            if not snapshots or snapshots[-1] != line:
                snapshots.append(line)
            if snap.ready:
                break
            time.sleep(0.05)
        result = sent.get(timeout=5)
        shown = snapshots if len(snapshots) <= 6 else [*snapshots[:3], "...", *snapshots[-3:]]
        self.say("process_large_dataset",
                 f"{len(snapshots)} distinct progress reads from the demo process (tw.progress):")
        for line in shown:
            self.console.print(f"    {line}", markup=False)
        self.console.print(f"  result: {result['processed_count']} items, "
                           f"{result['invalid_count']} invalid, checksum {result['checksum']}; "
                           f"stored in example_processing_results", markup=False)

    def email_with_retries(self) -> None:
        handler = BusySmtp(busy=2)
        with smtp_server(handler) as port:
            sent = self.submit(patterns.SEND_EMAIL, [
                "ana@example.org", "Your export is ready", "Your export has 800 rows."],
                {"template_id": "welcome", "smtp_host": "127.0.0.1", "smtp_port": port})
            result = sent.get(timeout=60)
        self.say("send_notification_email", f"via a local SMTP server (aiosmtpd, port {port}) "
                 f"that answers 451 twice: {result['status']} on attempt {result['attempt']}")
        for msg in handler.messages:
            self.console.print(f"  received: To {msg['To']}, Subject {msg['Subject']!r}",
                               markup=False)
        with self.tw.store.engine.connect() as conn:
            logs = list(conn.execute(select(tables.email_logs)
                                     .order_by(tables.email_logs.c.id)))
        for row in logs:
            self.console.print(f"  email_logs: attempt {row.attempt} {row.status} "
                               f"{row.error or ''}", markup=False)
        attempts = wait(lambda: [a for a in journal.attempts(self.tw.store, sent.id)
                                 if a.state == "success"] and
                        journal.attempts(self.tw.store, sent.id), what="journal rows")
        table = Table(title="journal: every attempt of that task, retried with backoff")
        for column in ("attempt", "state", "queue", "error", "waited before (s)"):
            table.add_column(column)
        previous: datetime | None = None
        for a in attempts:
            waited = (f"{(a.started_at - previous).total_seconds():.2f}"
                      if previous and a.started_at else "-")
            table.add_row(str(a.attempt), a.state, a.queue or "-",
                          f"{a.exc_type}: {a.exc_message}" if a.exc_type else "", waited)
            previous = a.finished_at
        self.console.print(table)

    def batch_users(self) -> None:
        ids = tables.seed_users(self.tw, 250)
        sent = self.submit(patterns.BATCH_USERS, [[*ids[:200], 998, 999], "deactivate"],
                           {"batch_size": 50})
        r = sent.get(timeout=60)
        self.say("batch_process_users", f"replaced itself by a chord of {r['batches']} "
                 f"batches (no task waits on another); the callback's counts are its result: "
                 f"{r['processed']} deactivated, {r['failed']} failed "
                 f"(no such user: {r['failed_ids']})")

    def report(self) -> None:
        sent = self.submit(patterns.GENERATE_REPORT, ["user_activity",
                                                      {"title": "Users after the batch"}])
        phases: list[str] = []
        while not sent.ready():
            status = self.tw.progress(sent.id).status
            if status and (not phases or phases[-1] != status):
                phases.append(status)
            time.sleep(0.01)
        r = sent.get(timeout=5)
        path = Path(r["file_path"])
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        self.say("generate_report", f"on the cpu_intensive queue, wrote {shown} "
                 f"(phases seen: {', '.join(phases) or 'too fast to see'})")
        for line in path.read_text(encoding="utf-8").splitlines():
            self.console.print(f"    {line}", markup=False)

    def conditional(self) -> None:
        data = {"user_id": 201, "email": "lee@acme.io", "days_since_login": 120,
                "plan": "free", "orders": 3}
        conditions = {
            "dormant": {"type": "custom_function",
                        "params": {"function": "inactive_for_days", "days": 90},
                        "task": patterns.USER_BATCH,
                        "task_params": {"user_ids": [201], "operation": "deactivate"}},
            "has_email": {"type": "field_exists", "params": {"field": "email"},
                          "task": patterns.GENERATE_REPORT,
                          "task_params": {"report_type": "email_delivery",
                                          "parameters": {"format": "json"}}},
            "pro_plan": {"type": "value_equals", "params": {"field": "plan", "value": "pro"},
                         "task": patterns.USER_BATCH,
                         "task_params": {"user_ids": [201], "operation": "activate"}},
            "loyal": {"type": "value_greater_than", "params": {"field": "orders", "threshold": 10},
                      "task": patterns.USER_BATCH,
                      "task_params": {"user_ids": [201], "operation": "activate"}},
        }
        outcome = self.submit(patterns.CONDITIONAL, [data, conditions]).get(timeout=30)
        for o in outcome:
            if o["status"] == "scheduled":
                self.final_ids.append(o["task_id"])
                self.tw.app.AsyncResult(o["task_id"]).get(timeout=30)
        self.say("conditional_processing", ", ".join(
            f"{o['condition']} -> {o['status']}"
            + (f" {o['task']}" if o["status"] == "scheduled" else "") for o in outcome))

    def dead_letter_and_replay(self) -> None:
        sent = self.submit(patterns.PROCESS_DATASET, [99, {}])
        sent.get(timeout=30, propagate=False)
        letter = wait(lambda: [x for x in self.tw.dead_letters.find(DeadLetterFilter(
            task=patterns.PROCESS_DATASET)) if x.task_id == sent.id], what="dead letter")[0]
        self.say(f"dead letter #{letter.id}", f"{letter.name} {letter.exc_type}: "
                 f"{letter.exc_message} (reason {letter.reason}, {letter.attempts} attempt)")
        tables.seed_dataset(self.tw, 99, "uploaded late", [{"id": 1}, {"id": 2}, {"id": 3}])
        new_id = self.tw.dead_letters.replay([letter.id])[letter.id]
        self.final_ids.append(new_id)
        result = self.tw.app.AsyncResult(new_id).get(timeout=30)
        again = self.tw.dead_letters.get(letter.id)
        self.console.print(f"  after the dataset was uploaded, replayed as {new_id}: "
                           f"{result['processed_count']} items processed; the letter records "
                           f"replay_count={again.replay_count}, "
                           f"replay_task_id={again.replay_task_id}", markup=False)

    def journal_summary(self) -> None:
        def final(task_id: str) -> bool:
            return any(a.state in ("success", "failure")
                       for a in journal.attempts(self.tw.store, task_id))

        wait(lambda: all(final(i) for i in self.final_ids), what="the journal's final rows")
        stmt = (select(JournalEntry.name, JournalEntry.state, func.count())
                .where(JournalEntry.finished_at >= self.started)
                .where(JournalEntry.name.like("examples.%"))
                .group_by(JournalEntry.name, JournalEntry.state)
                .order_by(JournalEntry.name, JournalEntry.state))
        with self.tw.store.session() as session:
            counts = list(session.execute(stmt))
        table = Table(title="journal rows of this run, by task and state "
                            "('taskworks journal' shows them one by one)")
        for column in ("task", "state", "rows"):
            table.add_column(column)
        totals: dict[str, int] = {}
        for name, state, n in counts:
            table.add_row(name, state, str(n))
            totals[state] = totals.get(state, 0) + int(n)
        self.console.print(table)
        self.console.print("  by state: " + ", ".join(f"{s} {n}" for s, n in sorted(
            totals.items())), markup=False)
