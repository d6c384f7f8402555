"""Helpers for the workflow tests: unique workflow names, step builders, a worker."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from taskworks.workflows import Step, Workflow
from tests.support.workers import WorkerProcess

#: threads: several steps of one run at once in one worker process
POOL = {"pool": "threads", "concurrency": 4}


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def rec(name: str, *deps: str, key: str = "wf:order", **params: Any) -> Step:
    """A step that records its name in the Redis list ``key``."""
    return Step(name=name, task="wf.record", params={"label": name, "key": key, **params},
                depends_on=tuple(deps))


def workflow(name: str, *steps: Step, **kwargs: Any) -> Workflow:
    return Workflow(name=unique(name), steps=tuple(steps), **kwargs)


@pytest.fixture
def worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker(["default"], **POOL)
