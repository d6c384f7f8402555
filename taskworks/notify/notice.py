"""What a failure notification says, in a form that travels as a JSON task argument."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taskworks.errors import InvalidInput
from taskworks.runtime.severity import Severity

__all__ = ["FailureNotice", "one_line"]

_SEVERITIES = frozenset(Severity)
_COUNTS = frozenset({"attempt", "occurrences"})


def one_line(value: str) -> str:
    """The words of ``value`` on one line."""
    # header-safe: a line break in a mail header is an error (and an injection vector)
    return " ".join(value.split())


@dataclass(frozen=True)
class FailureNotice:
    task_name: str
    task_id: str
    exc_type: str
    exc_message: str
    severity: str
    hostname: str
    attempt: int
    traceback_excerpt: str = ""
    occurrences: int = 1

    def __post_init__(self) -> None:
        # it arrives as JSON from another process: check what type checkers cannot
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            expected = int if field.name in _COUNTS else str
            if not isinstance(value, expected) or isinstance(value, bool):
                raise InvalidInput(f"notice.{field.name}", value, f"a {expected.__name__}")
        if self.severity not in _SEVERITIES:
            raise InvalidInput("notice.severity", self.severity,
                               f"one of {', '.join(Severity)}")
        if self.attempt < 0:
            raise InvalidInput("notice.attempt", self.attempt, "an integer >= 0")
        if self.occurrences < 1:
            raise InvalidInput("notice.occurrences", self.occurrences, "an integer >= 1")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FailureNotice:
        """Build from ``to_json()`` output; keys this version does not know are ignored
        so that a newer producer does not break an older worker."""
        if not isinstance(data, Mapping):
            raise InvalidInput("notice", data, "a JSON object")
        names = [f.name for f in dataclasses.fields(cls)]
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise InvalidInput("notice", sorted(data), f"the keys {', '.join(missing)} as well")
        return cls(**{name: data[name] for name in names if name in data})

    def subject(self) -> str:
        repeated = f" ({self.occurrences}x)" if self.occurrences > 1 else ""
        return one_line(
            f"[taskworks] {self.severity.upper()}: {self.task_name} failed "
            f"with {self.exc_type}{repeated}"
        )

    def text(self) -> str:
        lines = [
            f"{self.task_name} failed: {self.exc_type}: {self.exc_message}",
            "",
            f"severity:    {self.severity}",
            f"task id:     {self.task_id}",
            f"host:        {self.hostname}",
            f"attempt:     {self.attempt}",
            f"occurrences: {self.occurrences}",
        ]
        if self.occurrences > 1:
            lines.append("  (the same task and exception type since the last notification)")
        if self.traceback_excerpt:
            lines += ["", "traceback:", self.traceback_excerpt.rstrip()]
        return "\n".join(lines) + "\n"
