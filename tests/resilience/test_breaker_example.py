"""examples/flaky_service.py: the scenario ``make demo`` runs, against the real broker."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from examples.flaky_service import BREAKER, breaker_scenario
from taskworks.resilience.breaker import BreakerState


def test_breaker_scenario_shows_opening_fallback_single_probe_and_recovery(tw: Any) -> None:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    breaker_scenario(tw, console)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "fallback price 42" in text
    assert "breaker open, service not called" in text
    assert "8 concurrent callers -> 1 probe (failed), 7 refused; service hits +1" in text
    assert "8 concurrent callers -> 1 probe (succeeded), 7 refused; service hits +1" in text
    assert "after recovery: fresh price" in text
    status = tw.breakers.show(BREAKER, recent=10)
    assert status.state is BreakerState.CLOSED
    assert [(t.from_state, t.to_state) for t in reversed(status.recent)][1:] == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "open"),
        ("open", "half_open"), ("half_open", "closed")]
