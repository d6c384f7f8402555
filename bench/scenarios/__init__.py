"""The registration point: every module listed here registers one scenario on import.

To add a scenario, write ``bench/scenarios/<name>.py`` that calls ``bench.core.register``
with a ``Scenario`` and add its name below.
"""

from __future__ import annotations

import importlib

MODULES = ("drain", "enqueue", "latency", "autoscale", "idempotency", "breaker", "workflows",
           "durable", "mapreduce", "backlog", "scheduling", "io")


def load_all() -> None:
    for name in MODULES:
        importlib.import_module(f"bench.scenarios.{name}")
