"""``make demo``: start the embedded stack, run the patterns guide's scenarios, print what
happened, stop.

Each capability adds its scenario here.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.control_demo import control_scenario  # noqa: E402
from examples.demo_app import tw  # noqa: E402
from examples.demo_runtime import RuntimeDemo  # noqa: E402
from examples.flaky_service import breaker_scenario  # noqa: E402
from examples.mapreduce_demo import mapreduce_scenario  # noqa: E402
from examples.workflows.scenario import workflow_scenario  # noqa: E402
from taskworks import logs  # noqa: E402
from taskworks.cli.autoscale import recorder_for  # noqa: E402
from taskworks.stack import Stack  # noqa: E402
from taskworks.store.migrate import upgrade  # noqa: E402
from taskworks.tasks import builtin  # noqa: E402

console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 150)


def topology_scenario() -> None:
    """Send a task to every queue and show where each ran."""
    calls: list[tuple[str, list[Any], dict[str, Any]]] = [
        ("tasks.cpu_intensive.hash_chain", ["taskworks", 200_000], {}),
        ("tasks.io_intensive.resolve", ["localhost"], {}),
        ("tasks.priority.page_oncall", ["disk almost full"], {"priority": 9}),
        ("tasks.scheduled.rollup", [[1.5, 2.5, 3.0]], {}),
        ("demo.greet", ["taskworks"], {}),
    ]
    sent = [(name, tw.submit(name, args, **opts)) for name, args, opts in calls]
    table = Table(title="Every queue of the patterns guide's topology, served by its worker group")
    for column in ("task", "queue", "worker", "pid", "result"):
        table.add_column(column)
    for name, result in sent:
        info = result.get(timeout=60)
        table.add_row(name, info["queue"], info["worker"], str(info["pid"]), str(info["result"]))
    console.print(table)


def builtin_scenario() -> None:
    """The beat schedule's built-in tasks, run on demand."""
    health = tw.submit(builtin.HEALTH_CHECK).get(timeout=60)
    console.print(f"health check: healthy={health['healthy']} broker={health['broker']} "
                  f"database={health['database']} workers={health['workers']}")
    report = tw.submit(builtin.DAILY_REPORT).get(timeout=60)
    console.print(f"daily report for {report['day']}: {report}")
    cleaned = tw.submit(builtin.CLEANUP).get(timeout=60)
    console.print(f"cleanup of expired data: {cleaned}")


def main() -> int:
    logs.configure(tw.settings.log_format, "WARNING")
    log_dir = tw.settings.data_dir / "logs"
    upgrade(tw.store)
    recorder = recorder_for(tw)  # autoscaler decisions into the store, its status into Redis
    stack = Stack(tw.settings, app_spec="examples.demo_app:tw", log_dir=log_dir,
                  on_change=recorder.record, on_status=recorder.publish)
    started = time.perf_counter()
    try:
        server = stack.start()
        console.print(f"[bold]taskworks demo[/bold]: broker {server.url if server else '?'}, "
                      f"store {tw.settings.effective_database_url}, logs in {log_dir}/")
        stack.wait_ready(tw.app)
        topology_scenario()
        builtin_scenario()
        RuntimeDemo(tw, console).run()
        console.rule("resilience: a circuit breaker shared by every worker")
        breaker_scenario(tw, console)
        console.rule("workflows: the patterns guide's data_processing and conditional_processing")
        workflow_scenario(tw, console)
        console.rule("map-reduce: the patterns guide's distributed processing example")
        mapreduce_scenario(tw, console)
        console.rule("control plane and autoscaler")
        control_scenario(tw, console)
    finally:
        stack.stop()
    console.print(f"demo finished in {time.perf_counter() - started:.1f}s; stack stopped cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
