"""The dead-letter store: replay round trip, filters, bulk replay, purge, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from taskworks.errors import InvalidInput
from taskworks.runtime.dlq import DeadLetterFilter, DeadLetterStore
from taskworks.store.engine import Store
from taskworks.store.migrate import upgrade
from taskworks.store.tables import DeadLetter
from tests.support.wait import wait_for
from tests.support.workers import ROOT, WorkerProcess


def _fail_into_dlq(tw: Any, redis_client: redis.Redis, keys: list[str]) -> list[Any]:
    for key in keys:
        redis_client.set(f"{key}:fail", 1)
    results = [tw.submit("tests.toggle", [key]) for key in keys]
    for result in results:
        result.get(timeout=30, propagate=False)
    return wait_for(lambda: len(tw.dead_letters.find()) == len(keys) and tw.dead_letters.find(),
                    what="dead letters")


def test_replay_round_trip(
    tw: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess], journal_rows: Callable[..., Any],
) -> None:
    start_worker()
    [letter] = _fail_into_dlq(tw, redis_client, ["r1"])
    assert (letter.name, letter.args, letter.exc_type, letter.reason) == (
        "tests.toggle", ["r1"], "KeyError", "max_retries")
    redis_client.delete("r1:fail")  # the downstream is fixed

    replayed = tw.dead_letters.replay([letter.id])
    new_id = replayed[letter.id]
    assert new_id != letter.task_id
    assert tw.app.AsyncResult(new_id).get(timeout=30) == "ok"
    assert redis_client.get("r1:ok") == "1"
    again = tw.dead_letters.get(letter.id)
    assert (again.replay_count, again.replay_task_id) == (1, new_id)
    assert again.replayed_at is not None
    rows = journal_rows(2, "tests.toggle")
    assert [(r.task_id, r.state) for r in rows] == [(letter.task_id, "failure"),
                                                    (new_id, "success")]


def test_filters_bulk_replay_and_purge(
    tw: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker()
    _fail_into_dlq(tw, redis_client, ["b1", "b2", "b3"])
    tw.submit("tests.critical", ["other"]).get(timeout=30, propagate=False)
    wait_for(lambda: len(tw.dead_letters.find()) == 4, what="4 dead letters")
    by_exc = tw.dead_letters.find(DeadLetterFilter(exc_type="KeyError"))
    assert len(by_exc) == 3
    assert len(tw.dead_letters.find(DeadLetterFilter(task="tests.critical"))) == 1

    redis_client.delete("b1:fail", "b2:fail", "b3:fail")  # no new letters race the counts
    replayed = tw.dead_letters.replay_matching(DeadLetterFilter(exc_type="KeyError"))
    assert len(replayed) == 3
    assert len(tw.dead_letters.find(DeadLetterFilter(replayed=True))) == 3
    assert tw.dead_letters.purge(DeadLetterFilter(task="tests.critical")) == 1
    assert len(tw.dead_letters.find()) == 3


def test_unknown_ids_replay_nothing(tw: Any, store: Any, redis_client: redis.Redis,
                                    start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker()
    [letter] = _fail_into_dlq(tw, redis_client, ["u1"])
    with pytest.raises(InvalidInput, match="id"):
        tw.dead_letters.replay([letter.id, 999_999])
    assert tw.dead_letters.get(letter.id).replay_count == 0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "taskworks", "dlq", *args, "--app",
                           "tests.apps.sample:tw"], cwd=ROOT, env=os.environ,
                          capture_output=True, text=True, timeout=60)


def test_dlq_cli(tw: Any, store: Any, redis_client: redis.Redis,
                 start_worker: Callable[..., WorkerProcess]) -> None:
    start_worker()
    letters = _fail_into_dlq(tw, redis_client, ["c1", "c2"])
    listed = _cli("list", "--exception", "KeyError", "--since", "1h")
    assert listed.returncode == 0, listed.stderr
    assert all(letter.task_id in listed.stdout for letter in letters)
    shown = _cli("show", str(letters[0].id))
    assert letters[0].task_id in shown.stdout
    redis_client.delete("c1:fail", "c2:fail")  # replays succeed: no new letters race the purge
    replayed = _cli("replay", str(letters[0].id))
    assert replayed.returncode == 0, replayed.stderr
    assert "1 replayed" in replayed.stdout
    bulk = _cli("replay", "--all", "--task", "tests.toggle")
    assert "2 replayed" in bulk.stdout
    assert _cli("show", "424242").returncode == 2
    assert _cli("replay").returncode == 2
    wait_for(lambda: sum(int(redis_client.get(f"{k}:ok") or 0) for k in ("c1", "c2")) == 3,
             what="the three replays to succeed")
    purged = _cli("purge", "--yes")
    assert "2 deleted" in purged.stdout
    assert tw.dead_letters.find() == []


def test_two_copies_of_a_task_failing_for_good_end_it_once(
    tw: Any, store: Any, redis_client: redis.Redis,
    start_worker: Callable[..., WorkerProcess], journal_rows: Callable[..., Any],
) -> None:
    """A worker killed between publishing a retry and acknowledging leaves two copies of
    a task; neither is a redelivery of the other's outcome, so both run. The soak once
    saw both exhaust: two letters for one task. The second copy now records nothing."""
    start_worker()
    for _ in range(2):  # two messages of one task id, as the kill leaves them
        tw.submit("tests.critical", ["twice"], task_id="copy-1").get(timeout=30,
                                                                     propagate=False)
    letters = tw.dead_letters.find(DeadLetterFilter(task="tests.critical"))
    assert [letter.task_id for letter in letters] == ["copy-1"]
    [row] = journal_rows(1, "tests.critical")
    assert (row.task_id, row.state) == ("copy-1", "failure")
    # nothing arrives late: the second copy's row was never written, not merely slow
    tw.submit("tests.echo", [1]).get(timeout=30)
    assert [r.state for r in journal_rows(2)] == ["failure", "success"]


def test_dlq_cli_show_hides_secret_arguments(
    tw: Any, store: Any, start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker()
    tw.submit("tests.echo", [1], {"fail_every": 1, "api_token": "tok-cli-4711"}).get(
        timeout=30, propagate=False)
    [letter] = wait_for(lambda: tw.dead_letters.find(), what="the dead letter")
    shown = _cli("show", str(letter.id))
    assert shown.returncode == 0, shown.stderr
    assert "tok-cli-4711" not in shown.stdout
    assert json.loads(shown.stdout)["kwargs"] == {"fail_every": 1, "api_token": "***"}
    assert letter.kwargs["api_token"] == "tok-cli-4711"  # stored raw, for a replay


# -- the rules every adapter shares, in the library -------------------------------------
def _letters(database_url: str, *names: str) -> DeadLetterStore:
    """A store on a fresh database holding one letter per name (no way to send: a
    replay is refused before it would send)."""
    store = Store(database_url)
    upgrade(store)
    with store.session() as session:
        session.add_all(DeadLetter(task_id=f"id-{i}", name=name, queue="default", args=[i],
                                   kwargs={}, exc_type="KeyError", attempts=1,
                                   reason="failed", failed_at=datetime.now(UTC),
                                   replay_count=0) for i, name in enumerate(names))
    return DeadLetterStore(store)


def test_purge_delete_and_count(database_url: str) -> None:
    letters = _letters(database_url, "a", "a", "b")
    try:
        assert letters.count() == 3
        assert letters.count(DeadLetterFilter.parse(task="a", since="1h")) == 2
        with pytest.raises(InvalidInput) as caught:
            letters.purge()  # every letter takes saying so
        assert caught.value.field == "all"
        assert letters.count() == 3
        first = letters.find(DeadLetterFilter(task="b"))[0]
        letters.delete(first.id)
        with pytest.raises(InvalidInput) as missing:
            letters.delete(first.id)
        assert (missing.value.field, missing.value.value) == ("id", first.id)
        assert letters.purge(DeadLetterFilter(), all=True) == 2
    finally:
        letters.store.dispose()


@pytest.mark.parametrize(("filters", "field"), [
    ({"since": "yesterday"}, "since"), ({"since": "99999999999w"}, "since"),
    ({"until": "tomorrow"}, "until"),
])
def test_a_bad_filter_names_its_parameter(filters: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        DeadLetterFilter.parse(**filters)
    assert caught.value.field == field


def test_filters_as_typed() -> None:
    assert DeadLetterFilter.parse(task="", exc_type="", since="", until="").is_empty
    parsed = DeadLetterFilter.parse(task="t", until="2026-11-23T12:00")
    assert (parsed.task, parsed.until) == ("t", datetime(2026, 11, 23, 12, 0))
    assert not parsed.is_empty


def test_a_replay_takes_ids_or_all(tw: Any, store: Any) -> None:
    with pytest.raises(InvalidInput) as both:
        tw.dead_letters.replay_selection([1], all=True)
    assert both.value.field == "all"
    with pytest.raises(InvalidInput) as neither:
        tw.dead_letters.replay_selection([])
    assert neither.value.field == "ids"
    with pytest.raises(InvalidInput) as unknown:
        tw.dead_letters.replay_selection([999_999])
    assert unknown.value.field == "id"


def test_a_store_without_a_way_to_send_refuses_to_replay(database_url: str) -> None:
    letters = _letters(database_url, "a")
    try:
        with pytest.raises(RuntimeError, match="Resend"):
            letters.replay([letters.find()[0].id])
    finally:
        letters.store.dispose()
