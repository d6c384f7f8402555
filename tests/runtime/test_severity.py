"""Severity rules (most specific class wins) and error callbacks."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import redis
from billiard.exceptions import WorkerLostError
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from taskworks.errors import InvalidInput, TaskMemoryError
from taskworks.runtime.middleware import TaskContext
from taskworks.runtime.severity import (
    ErrorCallbacks,
    Severity,
    SeverityMiddleware,
    SeverityRules,
)
from tests.support.workers import ROOT, WorkerProcess


class FlakyNetwork(ConnectionRefusedError):
    pass


@pytest.mark.parametrize(("exc", "expected"), [
    (ConnectionError(), Severity.MEDIUM), (FlakyNetwork(), Severity.MEDIUM),
    (TimeoutError(), Severity.MEDIUM), (MemoryError(), Severity.CRITICAL),
    (OperationalError("x", {}, Exception()), Severity.HIGH), (sqlite3.OperationalError(),
                                                               Severity.HIGH),
    (WorkerLostError(), Severity.HIGH), (SoftTimeLimitExceeded(), Severity.HIGH),
    (ValueError(), Severity.LOW), (KeyError(), Severity.LOW),
])
def test_default_rules(exc: BaseException, expected: Severity) -> None:
    assert SeverityRules().classify(exc) == expected


def test_most_specific_rule_wins_whatever_the_order() -> None:
    # the patterns guide matched in dict order: Exception first would shadow everything after it
    rules = SeverityRules({Exception: Severity.HIGH}, default=Severity.LOW)
    rules.set(ConnectionError, "medium")
    rules.set(FlakyNetwork, Severity.CRITICAL)
    assert rules.classify(FlakyNetwork()) == Severity.CRITICAL
    assert rules.classify(ConnectionRefusedError()) == Severity.MEDIUM
    assert rules.classify(ValueError()) == Severity.HIGH
    assert rules.classify(KeyboardInterrupt()) == Severity.LOW


def test_bad_rules_are_refused() -> None:
    with pytest.raises(InvalidInput, match="severity"):
        SeverityRules().set(ValueError, "apocalyptic")
    with pytest.raises(InvalidInput, match="exc_type"):
        SeverityRules().set("ValueError", "high")  # type: ignore[arg-type]


def _ctx() -> TaskContext:
    return TaskContext(task=None, task_id="t", name="n", queue=None, args=(), kwargs={},
                       attempt=1, options={}, hostname=None)


def test_callbacks_of_the_most_specific_class_run_and_failures_are_contained() -> None:
    called: list[str] = []
    callbacks = ErrorCallbacks()
    callbacks.register(Exception, lambda e, c: called.append("exception"))
    callbacks.register(ConnectionError, lambda e, c: called.append("connection"))

    def broken(exc: BaseException, ctx: TaskContext) -> None:
        raise RuntimeError("broken")

    callbacks.register(ConnectionError, broken)
    callbacks.register(ConnectionError, lambda e, c: called.append("after broken"))
    callbacks.run(FlakyNetwork(), _ctx())  # must not raise
    assert called == ["connection", "after broken"]
    callbacks.run(ValueError(), _ctx())
    assert called[-1] == "exception"


def test_database_error_callback_resets_the_pool(tw: Any) -> None:
    engine = tw.store.engine
    for callback in tw.runtime.get(SeverityMiddleware).callbacks.matching(
            OperationalError("x", {}, Exception())):
        callback(OperationalError("x", {}, Exception()), _ctx())
    assert tw.store.engine is not engine


def test_task_override_and_broken_callback_with_a_real_worker(
    tw: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess], journal_rows: Callable[..., Any],
) -> None:
    start_worker()
    critical = tw.submit("tests.critical", ["boom"])
    # tests.toggle fails with KeyError, whose registered callback raises on purpose
    redis_client.set("cb:fail", 1)
    keyed = tw.submit("tests.toggle", ["cb"])
    with pytest.raises(ValueError, match="boom"):
        critical.get(timeout=30)
    with pytest.raises(KeyError):  # the original error, not the callback's RuntimeError
        keyed.get(timeout=30)
    rows = {r.task_id: r for r in journal_rows(2)}
    assert rows[critical.id].severity == "critical"  # ValueError alone would be low
    assert (rows[keyed.id].exc_type, rows[keyed.id].severity) == ("KeyError", "low")


def test_memory_error_recycles_the_prefork_child_after_the_task(
        tw: Any, store: Any, start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker(pool="prefork", concurrency=1)
    first = tw.submit("tests.memory_hog", [False]).get(timeout=30)
    assert tw.submit("tests.memory_hog", [False]).get(timeout=30) == first  # same child
    failed = tw.submit("tests.memory_hog", [True])
    failed.get(timeout=30, propagate=False)
    assert failed.state == "FAILURE"
    assert isinstance(failed.result, TaskMemoryError)  # not the whole worker lost
    after = tw.submit("tests.memory_hog", [False]).get(timeout=30)
    assert after != first  # the pool replaced the child once the failed task was done


def test_default_callbacks_need_only_the_store(tmp_path: Any) -> None:
    from taskworks.runtime.severity import default_callbacks
    from taskworks.store.engine import Store

    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    engine = store.engine
    error = OperationalError("x", {}, Exception())
    for callback in default_callbacks(store).matching(error):
        callback(error, _ctx())
    assert store.engine is not engine  # its pool was reset
    store.dispose()


def test_one_severity_scale_for_settings_and_notifications() -> None:
    from taskworks.errors import ConfigError
    from taskworks.notify.service import should_notify
    from taskworks.settings import load_settings

    assert [s.value for s in Severity] == ["low", "medium", "high", "critical"]
    minimum = load_settings(notify={"min_severity": "medium"}).notify.min_severity
    assert minimum is Severity.MEDIUM
    assert load_settings().notify.min_severity is Severity.HIGH
    with pytest.raises(ConfigError, match="min_severity"):
        load_settings(notify={"min_severity": "urgent"})
    assert [should_notify(s, minimum) for s in Severity] == [False, True, True, True]


def test_a_driver_loaded_after_start_has_its_errors_rated_and_called_back() -> None:
    """psycopg is imported only where PostgreSQL is used (its import was an eighth of a
    process's start). Its errors still get the database rule and callback once it is."""
    code = """
import sys
from taskworks.runtime.middleware import TaskContext
from taskworks.runtime.severity import SeverityRules, default_callbacks
from taskworks.store.engine import Store
import taskworks.app
assert "psycopg" not in sys.modules, "imported at start"
rules = SeverityRules()
rules.set(ValueError, "medium")
callbacks = default_callbacks(Store("sqlite://"))
import psycopg
error = psycopg.errors.AdminShutdown("terminating connection")
print(rules.classify(error), [c.__name__ for c in callbacks.matching(error)])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["high", "['reset_database_pool']"]
