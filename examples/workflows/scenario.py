"""The workflow scenario of ``make demo``: the patterns guide's two workflows, run for real.

The worker app must have the step tasks (``examples.workflows.steps.register(tw)``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from taskworks.errors import InvalidInput

if TYPE_CHECKING:
    from taskworks.app import Taskworks
    from taskworks.workflows.api import RunStatus

HERE = Path(__file__).parent
DATA_INPUT = {"dataset_id": 123, "processing_options": {"quality_threshold": 0.9,
                                                         "output_format": "json"},
              "notification_recipients": ["admin@example.com"]}


def _table(status: RunStatus) -> Table:
    table = Table(title=f"{status.workflow} run {status.id[:8]}: {status.state.value}",
                  title_justify="left")
    for column in ("step", "state", "took", "result"):
        table.add_column(column)
    for step in status.steps.values():
        took = (f"{(step.finished_at - step.started_at).total_seconds() * 1000:.0f} ms"
                if step.started_at and step.finished_at else "-")
        shown: Any = step.error or step.skip_reason or step.result
        text = json.dumps(shown, default=str) if not isinstance(shown, str) else shown
        table.add_row(step.name, step.state, took, text[:70])
    return table


def workflow_scenario(tw: Taskworks, console: Console, timeout: float = 120) -> None:
    """Register the patterns guide's workflows from YAML, run them, and show every step."""
    if "workflows.validate_data" not in tw.app.tasks:
        raise InvalidInput("app", tw.app.main, "an app with examples.workflows.steps "
                           "registered (steps.register(tw))")
    for name in ("data_processing.yaml", "conditional_processing.yaml"):
        wf = tw.workflows.register(HERE / name)
        console.print(f"registered workflow [bold]{wf.name}[/] v{wf.version}: "
                      + " -> ".join(s.name for s in wf.steps))
    status = tw.workflows.start("data_processing", DATA_INPUT).wait(timeout)
    console.print(_table(status))
    if status.state.value == "SUCCEEDED":
        console.print(status.steps["generate_report"].result["report"])
    for size in (50_000, 5_000_000):
        status = tw.workflows.start("conditional_processing",
                                    {"data_size": size, "dataset_id": 7}).wait(timeout)
        ran = [n for n, s in status.steps.items() if s.state == "SUCCEEDED"]
        console.print(f"data_size {size:,}: ran {', '.join(ran)}; skipped "
                      + ", ".join(n for n, s in status.steps.items() if s.state == "SKIPPED"))
