"""Reading the journal: entries by filters, one task's attempts, counts by state, and
whether a task already ended (the outcome guard's question)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict
from sqlalchemy import func, select

from taskworks.errors import InvalidInput
from taskworks.runtime.journal.periods import parse_since
from taskworks.runtime.journal.states import ENDS, JournalState
from taskworks.runtime.severity import Severity
from taskworks.schema import Strict, refuse, validate
from taskworks.store.engine import Store
from taskworks.store.tables import DeadLetter, JournalEntry

__all__ = ["JournalQuery", "RecordedOutcome", "WindowStats", "attempts", "counts_by_state",
           "list_entries", "query", "recorded_outcome", "window_stats"]


def _one_of(kind: type[JournalState] | type[Severity]) -> BeforeValidator:
    def check(value: object) -> object:
        if value is not None and value not in {member.value for member in kind}:
            refuse(f"one of {', '.join(member.value for member in kind)}", value)
        return value
    return BeforeValidator(check)


def _since(value: object) -> object:
    """A period typed by a person ("1h") becomes the moment that long ago."""
    if isinstance(value, str):
        try:
            return parse_since(value)
        except InvalidInput as exc:
            refuse(exc.expected, value)
    return value


def _limit(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        refuse("an integer >= 1", value)
    return value


class JournalQuery(Strict):
    """Filters over the journal; every one given must match."""

    model_config = ConfigDict(frozen=True)

    task: str | None = None
    state: Annotated[JournalState | None, _one_of(JournalState)] = None
    severity: Annotated[Severity | None, _one_of(Severity)] = None
    #: rows finished at or after this moment; a period ("30m", "7d") is accepted too
    since: Annotated[datetime | None, BeforeValidator(_since)] = None
    limit: Annotated[int, BeforeValidator(_limit)] = 100

    @classmethod
    def parse(cls, **filters: Any) -> JournalQuery:
        """The query, or InvalidInput naming the filter (``state``, ``since``...)."""
        return validate(cls, filters, "")


def query(store: Store, q: JournalQuery) -> list[JournalEntry]:
    """The entries matching ``q``, newest first."""
    stmt = select(JournalEntry).order_by(JournalEntry.id.desc()).limit(q.limit)
    if q.task:
        stmt = stmt.where(JournalEntry.name == q.task)
    if q.state:
        stmt = stmt.where(JournalEntry.state == q.state.value)
    if q.severity:
        stmt = stmt.where(JournalEntry.severity == q.severity.value)
    if q.since:
        stmt = stmt.where(JournalEntry.finished_at >= q.since)
    with store.session() as session:
        return list(session.scalars(stmt))


def list_entries(store: Store, *, task: str | None = None, state: str | None = None,
                 severity: str | None = None, since: str | datetime | None = None,
                 limit: int = 100) -> list[JournalEntry]:
    """The entries matching the filters as a caller gives them (``since`` a period like
    "1h" or a moment), newest first; InvalidInput naming the filter that is wrong."""
    return query(store, JournalQuery.parse(task=task, state=state, severity=severity,
                                           since=since or None, limit=limit))


def attempts(store: Store, task_id: str) -> list[JournalEntry]:
    """Every recorded attempt of one task, oldest first."""
    with store.session() as session:
        return list(session.scalars(
            select(JournalEntry).where(JournalEntry.task_id == task_id).order_by(JournalEntry.id)
        ))


def counts_by_state(store: Store, task: str | None = None, since: datetime | None = None
                    ) -> dict[str, int]:
    """How many rows each state has (of one task, finished since a moment)."""
    stmt = select(JournalEntry.state, func.count()).group_by(JournalEntry.state)
    if task:
        stmt = stmt.where(JournalEntry.name == task)
    if since is not None:
        stmt = stmt.where(JournalEntry.finished_at >= since)
    with store.session() as session:
        return {state: int(n) for state, n in session.execute(stmt)}


@dataclass(frozen=True)
class WindowStats:
    """Attempts by state over the last ``window`` seconds."""

    window: int
    counts: dict[str, int]
    #: tasks ended (success or failure) per second
    throughput: float
    #: failures among the tasks ended; 0.0 when none ended
    failure_rate: float


def window_stats(store: Store, window: int) -> WindowStats:
    """Throughput and failure rate over the last ``window`` seconds."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise InvalidInput("window", window, "a number of seconds, an integer >= 1")
    counts = counts_by_state(store, since=datetime.now(UTC) - timedelta(seconds=window))
    failed = counts.get(JournalState.FAILURE, 0)
    ended = counts.get(JournalState.SUCCESS, 0) + failed
    return WindowStats(window=window, counts=counts, throughput=round(ended / window, 3),
                       failure_rate=round(failed / ended, 4) if ended else 0.0)


@dataclass(frozen=True)
class RecordedOutcome:
    """What the store says about how a task ended."""

    #: the ending states its journal rows hold (success, failure)
    ends: frozenset[str]
    #: its dead letter; not looked up once a success is recorded
    letter: DeadLetter | None

    @property
    def succeeded(self) -> bool:
        return JournalState.SUCCESS in self.ends

    @property
    def ended(self) -> bool:
        return self.succeeded or self.letter is not None

    @property
    def letter_without_row(self) -> bool:
        """A worker died between writing the dead letter and its failure row."""
        return self.letter is not None and JournalState.FAILURE not in self.ends


def recorded_outcome(store: Store, task_id: str) -> RecordedOutcome:
    with store.session() as session:
        ends = frozenset(session.scalars(select(JournalEntry.state).where(
            JournalEntry.task_id == task_id,
            JournalEntry.state.in_([state.value for state in ENDS]))))
        letter = None if JournalState.SUCCESS in ends else session.scalars(select(
            DeadLetter).where(DeadLetter.task_id == task_id).limit(1)).first()
    return RecordedOutcome(ends=ends, letter=letter)
