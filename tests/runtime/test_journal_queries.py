"""Reading the journal, in the library: filters (periods, states, severities), one task's
attempts, counts, window stats and the outcome lookup, on SQLite and PostgreSQL alike.
The CLI and the API call these same functions (tests/runtime/test_journal.py,
tests/api/test_journal_dlq.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from taskworks.errors import InvalidInput
from taskworks.monitoring.metrics import OUTCOMES
from taskworks.runtime import journal
from taskworks.runtime.journal import JournalState
from taskworks.runtime.severity import Severity
from taskworks.store.engine import Store
from taskworks.store.migrate import upgrade
from taskworks.store.tables import DeadLetter, JournalEntry


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    upgrade(store)
    yield store
    store.dispose()


def _add(store: Store, *rows: tuple[str, str, JournalState, Severity | None, float]) -> None:
    """Rows of (task id, task name, state, severity, minutes ago)."""
    now = datetime.now(UTC)
    with store.session() as session:
        session.add_all(JournalEntry(task_id=task_id, name=name, queue="default", state=state,
                                     attempt=1, args=[], kwargs={}, severity=severity,
                                     finished_at=now - timedelta(minutes=ago))
                        for task_id, name, state, severity, ago in rows)


def test_filters_as_callers_type_them(store: Store) -> None:
    _add(store, ("a1", "a", JournalState.RETRY, None, 90),
         ("a1", "a", JournalState.FAILURE, Severity.HIGH, 50),
         ("a2", "a", JournalState.SUCCESS, None, 5),
         ("b1", "b", JournalState.FAILURE, Severity.CRITICAL, 1))
    ids = [(e.task_id, e.state) for e in journal.list_entries(store)]
    assert ids == [("b1", "failure"), ("a2", "success"), ("a1", "failure"), ("a1", "retry")]
    assert [e.task_id for e in journal.list_entries(store, task="a", since="1h")] == [
        "a2", "a1"]
    assert [e.task_id for e in journal.list_entries(store, state="failure",
                                                    severity="critical")] == ["b1"]
    assert [e.task_id for e in journal.list_entries(
        store, since=datetime.now(UTC) - timedelta(minutes=10))] == ["b1", "a2"]
    assert len(journal.list_entries(store, limit=1)) == 1
    assert [e.state for e in journal.attempts(store, "a1")] == ["retry", "failure"]
    assert journal.counts_by_state(store, "a") == {"retry": 1, "failure": 1, "success": 1}
    assert journal.counts_by_state(store, since=datetime.now(UTC) - timedelta(minutes=10)
                                   ) == {"success": 1, "failure": 1}


@pytest.mark.parametrize(("filters", "field"), [
    ({"since": "yesterday"}, "since"), ({"since": "99999999999w"}, "since"),
    ({"state": "exploded"}, "state"), ({"severity": "meh"}, "severity"),
    ({"severity": "HIGH"}, "severity"), ({"limit": 0}, "limit"), ({"limit": True}, "limit"),
])
def test_a_bad_filter_names_its_parameter(store: Store, filters: dict[str, object],
                                          field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        journal.list_entries(store, **filters)  # type: ignore[arg-type]
    assert caught.value.field == field  # the parameter, never a CLI flag (--since)
    assert caught.value.value == next(iter(filters.values()))


def test_periods() -> None:
    before = datetime.now(UTC)
    assert before - timedelta(hours=1, seconds=5) < journal.parse_since("1h") \
        <= before - timedelta(hours=1) + timedelta(seconds=5)
    assert journal.parse_since(" 2w ") < before - timedelta(days=13)
    for bad in ("1y", "h", "-1h", "1.5h", "99999999999w"):
        with pytest.raises(InvalidInput, match="like 30s, 15m"):
            journal.parse_since(bad)
    with pytest.raises(InvalidInput) as caught:
        journal.parse_since("soon", field="until")
    assert caught.value.field == "until"


def test_window_stats(store: Store) -> None:
    _add(store, ("s1", "a", JournalState.SUCCESS, None, 1),
         ("s2", "a", JournalState.SUCCESS, None, 2),
         ("f1", "a", JournalState.FAILURE, Severity.LOW, 3),
         ("r1", "a", JournalState.RETRY, None, 3),
         ("old", "a", JournalState.FAILURE, Severity.LOW, 60))
    stats = journal.window_stats(store, 600)
    assert stats.counts == {"success": 2, "failure": 1, "retry": 1}
    assert stats.throughput == round(3 / 600, 3)
    assert stats.failure_rate == round(1 / 3, 4)
    assert journal.window_stats(store, 10).failure_rate == 0.0  # nothing ended: no rate
    with pytest.raises(InvalidInput) as caught:
        journal.window_stats(store, 0)
    assert caught.value.field == "window"


def test_recorded_outcome(store: Store) -> None:
    _add(store, ("ok", "a", JournalState.SUCCESS, None, 1),
         ("retried", "a", JournalState.RETRY, None, 1),
         ("lettered", "a", JournalState.FAILURE, Severity.LOW, 1))
    with store.session() as session:
        for task_id in ("lettered", "row-lost"):
            session.add(DeadLetter(task_id=task_id, name="a", queue="default", args=[],
                                   kwargs={}, attempts=1, reason="failed",
                                   failed_at=datetime.now(UTC), replay_count=0))
    ok = journal.recorded_outcome(store, "ok")
    assert (ok.ended, ok.succeeded, ok.letter, ok.letter_without_row) == (True, True, None,
                                                                          False)
    assert not journal.recorded_outcome(store, "retried").ended
    assert not journal.recorded_outcome(store, "unknown").ended
    lettered = journal.recorded_outcome(store, "lettered")
    assert (lettered.ended, lettered.succeeded, lettered.letter_without_row) == (
        True, False, False)
    lost = journal.recorded_outcome(store, "row-lost")
    assert (lost.ended, lost.letter_without_row) == (True, True)
    assert lost.letter is not None
    assert lost.letter.task_id == "row-lost"


def test_one_vocabulary_of_states() -> None:
    assert [s.value for s in JournalState] == ["success", "failure", "retry", "revoked",
                                               "deferred", "scheduled", "expired"]
    assert journal.ENDS == (JournalState.SUCCESS, JournalState.FAILURE)
    # what /metrics counts as ended tasks: every state but a scheduled retry, and a
    # task published to run later
    assert set(OUTCOMES) == set(JournalState) - {JournalState.RETRY, JournalState.SCHEDULED}
