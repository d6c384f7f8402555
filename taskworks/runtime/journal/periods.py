"""Periods as people type them ("90s", "15m", "1h", "7d", "2w"), for "since" filters."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from taskworks.errors import InvalidInput

__all__ = ["PERIOD_EXPECTED", "parse_since"]

PERIOD_EXPECTED = "a number and a unit, like 30s, 15m, 1h, 7d, 2w"
_PERIOD = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, field: str = "since") -> datetime:
    """The moment ``value`` ago ('90s', '15m', '1h', '7d', '2w'); InvalidInput naming
    ``field`` for anything else, a period too long for a date (99999999w) included."""
    match = _PERIOD.match(value.strip())
    if not match:
        raise InvalidInput(field, value, PERIOD_EXPECTED)
    amount, unit = match.groups()
    try:
        return datetime.now(UTC) - timedelta(**{_UNITS[unit]: int(amount)})
    except OverflowError:
        raise InvalidInput(field, value, PERIOD_EXPECTED) from None
