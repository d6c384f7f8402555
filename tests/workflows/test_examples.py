"""The patterns guide's workflows from examples/workflows, run by a real worker on their queues."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from rich.console import Console

from examples.workflows.scenario import DATA_INPUT, workflow_scenario
from tests.support.workers import WorkerProcess


def test_seed_workflows_run_end_to_end(tw: Any,
                                       start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker(["default", "priority", "cpu_intensive"], pool="threads", concurrency=3)
    buffer = io.StringIO()
    workflow_scenario(tw, Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert "data_processing run" in text
    assert "SUCCEEDED" in text
    assert "# dataset 123" in text
    assert "data_size 50,000: ran check_prerequisites, quick_analysis, conditional_processing" \
        in text
    assert "data_size 5,000,000: ran check_prerequisites, detailed_analysis, " \
        "conditional_processing" in text

    run = tw.workflows.start("data_processing", DATA_INPUT)
    status = run.wait(timeout=60)
    analysis = status.steps["analyze_data"].result
    assert analysis["count"] > 400
    assert set(analysis["per_sensor"]) == {f"s{i}" for i in range(7)}
    bad = tw.workflows.start("data_processing", {"dataset_id": "x"}).wait(timeout=60)
    assert bad.state == "FAILED"
    assert bad.failed_step == "validate_input"
    assert bad.error == "ValueError: dataset_id: got 'x', expected an integer"
