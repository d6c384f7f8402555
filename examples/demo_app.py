"""Tasks of the demo: one per queue of the patterns guide's topology, each doing a little
real work."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from examples import patterns
from examples.workflows import steps as workflow_steps
from taskworks import Taskworks

tw = Taskworks()
patterns.register(tw)  # the patterns guide's task patterns (examples/patterns.py)
# the step tasks of the patterns guide's workflows (examples/workflows/)
workflow_steps.register(tw)


def _where(task: Any) -> dict[str, Any]:
    return {
        "queue": (task.request.delivery_info or {}).get("routing_key"),
        "worker": task.request.hostname,
        "pid": os.getpid(),
    }


@tw.task(name="tasks.cpu_intensive.hash_chain", bind=True)
def hash_chain(self: Any, seed: str, rounds: int) -> dict[str, Any]:
    """CPU-bound: iterate sha256 (routed to cpu_intensive by its name)."""
    digest = seed.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return {**_where(self), "result": digest.hex()[:16]}


@tw.task(name="tasks.io_intensive.resolve", bind=True)
def resolve(self: Any, hostname: str) -> dict[str, Any]:
    """I/O-bound: a name lookup (routed to io_intensive)."""
    started = time.perf_counter()
    address = socket.gethostbyname(hostname)
    return {**_where(self), "result": f"{hostname} -> {address} "
            f"in {(time.perf_counter() - started) * 1000:.1f} ms"}


@tw.task(name="tasks.priority.page_oncall", bind=True)
def page_oncall(self: Any, message: str) -> dict[str, Any]:
    """Urgent (routed to priority)."""
    return {**_where(self), "result": f"paged: {message}"}


@tw.task(name="tasks.scheduled.rollup", bind=True)
def rollup(self: Any, values: list[float]) -> dict[str, Any]:
    """A periodic-style job (routed to scheduled)."""
    return {**_where(self), "result": {"n": len(values), "sum": sum(values)}}


@tw.task(name="demo.greet", bind=True)
def greet(self: Any, name: str) -> dict[str, Any]:
    """No route matches: the default queue."""
    return {**_where(self), "result": f"hello, {name}"}


def _ages_map(params: Mapping[str, Any], items: Iterable[tuple[int, Any]]) -> dict[str, int]:
    """People per age decade; a partition holding the item ``poison`` fails (a corrupt
    row), to show the partial-failure policy."""
    decades: dict[str, int] = {}
    for index, data in items:
        if index == params.get("poison"):
            raise ValueError(f"corrupt row at item {index}")
        age = data.get("age")
        if isinstance(age, int):
            key = f"{age // 10 * 10}s"
            decades[key] = decades.get(key, 0) + 1
    return decades


def _ages_reduce(params: Mapping[str, Any], partials: Sequence[Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for partial in partials:
        for key, count in partial.items():
            total[key] = total.get(key, 0) + count
    return dict(sorted(total.items()))


# a custom map-reduce function (docs/mapreduce.md), known to the client and the workers
tw.jobs.functions.custom("demo.ages_by_decade", map=_ages_map, reduce=_ages_reduce)
