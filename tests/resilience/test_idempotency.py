"""Idempotent tasks: one execution for many duplicates, leases that lapse, stored results."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

from taskworks import keys
from taskworks.errors import InvalidInput
from taskworks.resilience.idempotency import call_key, canonical_digest
from taskworks.runtime.journal import attempts
from tests.support.wait import wait_for
from tests.support.workers import WorkerProcess

#: a killed worker's lease lapses after 2 s; its message is restored after 3 s
SHORT_LEASE = {"TASKWORKS_IDEMPOTENCY__LEASE_SECONDS": "2", "TASKWORKS_VISIBILITY_TIMEOUT": "3"}


def idem_keys(name: str, args: list[Any], kwargs: dict[str, Any] | None = None) -> tuple[str, str]:
    found = call_key(name, {"idempotent": True}, tuple(args), kwargs or {})
    assert found is not None
    return found


def test_digest_is_canonical_json_of_args_and_kwargs() -> None:
    assert canonical_digest([1, "a"], {"b": 1, "a": 2}) == canonical_digest((1, "a"),
                                                                            {"a": 2, "b": 1})
    assert canonical_digest([1], {}) != canonical_digest(["1"], {})
    assert canonical_digest([], {"a": [1, 2]}) != canonical_digest([], {"a": [2, 1]})
    with pytest.raises(InvalidInput, match="arguments"):
        canonical_digest([object()], {})


@pytest.mark.parametrize(("options", "field"), [
    ({"idempotent": "yes"}, "idempotent"),
    ({"idempotency_key": "not-a-function"}, "idempotency_key"),
    ({"idempotent": True, "on_duplicate": "skip"}, "on_duplicate"),
    ({"idempotent": True, "idempotency_ttl": 0}, "idempotency_ttl"),
    ({"on_duplicate": "drop"}, "idempotent"),
])
def test_bad_options_are_refused_at_declaration(
        tw: Any, options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        tw.task(name=f"tests.bad_{field}", **options)(lambda: None)


def test_thousand_duplicates_on_four_processes_run_once_and_share_the_result(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker(pool="prefork", concurrency=2)
    start_worker(pool="prefork", concurrency=2)
    results = [tw.submit("tests.idem_work", ["dup", 1.0]) for _ in range(1000)]
    values = [r.get(timeout=120) for r in results]

    assert redis_client.get("dup:runs") == "1"
    first = values[0]
    assert first["run"] == 1
    assert all(v == first for v in values)
    result_key, lease_key = idem_keys("tests.idem_work", ["dup", 1.0])
    assert redis_client.exists(lease_key) == 0  # no lock left behind
    assert 86_000 < redis_client.ttl(result_key) <= 86_400


def test_after_success_a_duplicate_returns_the_stored_result_without_running(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker()
    first = tw.submit("tests.idem_work", ["once"]).get(timeout=30)
    again = tw.submit("tests.idem_work", ["once"]).get(timeout=30)
    other = tw.submit("tests.idem_work", ["other"]).get(timeout=30)
    assert again == first
    assert redis_client.get("once:runs") == "1"
    assert other["key"] == "other"  # other arguments, another call


def test_custom_key_function_decides_what_is_a_duplicate(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker()
    first = tw.submit("tests.idem_by_order", kwargs={"order_id": 7, "note": "a"}).get(timeout=30)
    second = tw.submit("tests.idem_by_order", kwargs={"order_id": 7, "note": "b"}).get(timeout=30)
    assert first == second == {"order_id": 7, "note": "a", "run": 1}
    assert redis_client.get("order:7:runs") == "1"


def test_drop_answers_a_running_duplicate_at_once_with_the_running_task_id(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker(pool="threads", concurrency=2)
    running = tw.submit("tests.idem_drop", ["dropme", 1.5])
    wait_for(lambda: redis_client.get("dropme:runs") == "1", what="the first run to start")
    duplicate = tw.submit("tests.idem_drop", ["dropme", 1.5]).get(timeout=30)
    assert duplicate == {"status": "duplicate", "task_id": running.id}
    assert running.get(timeout=30)["run"] == 1
    assert redis_client.get("dropme:runs") == "1"


def test_a_failure_stores_nothing_and_the_retry_runs(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker()
    assert tw.submit("tests.idem_fails_once", ["f1"]).get(timeout=30) == 2
    assert tw.submit("tests.idem_fails_once", ["f1"]).get(timeout=30) == 2
    assert redis_client.get("f1:runs") == "2"
    _, lease_key = idem_keys("tests.idem_fails_once", ["f1"])
    assert redis_client.exists(lease_key) == 0


def test_a_body_that_retries_itself_is_not_blocked_by_its_own_lease(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker()
    assert tw.submit("tests.idem_self_retry", ["selfr"]).get(timeout=20) == 2
    assert tw.submit("tests.idem_self_retry", ["selfr"]).get(timeout=20) == 2
    assert redis_client.get("selfr:runs") == "2"
    _, lease_key = idem_keys("tests.idem_self_retry", ["selfr"])
    assert redis_client.exists(lease_key) == 0


def test_sigkill_mid_task_gives_exactly_one_more_execution_and_no_stale_lease(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    doomed = start_worker(env=SHORT_LEASE)
    result = tw.submit("tests.idem_work", ["crash", 1.5])
    wait_for(lambda: redis_client.get("crash:runs") == "1", what="the first run to start")
    _, lease_key = idem_keys("tests.idem_work", ["crash", 1.5])
    assert redis_client.exists(lease_key) == 1
    doomed.kill()

    start_worker(env=SHORT_LEASE)
    value = result.get(timeout=60)  # redelivered (acks_late), run again once the lease lapsed
    assert value["run"] == 2
    assert redis_client.get("crash:runs") == "2"
    assert redis_client.get("crash:done") == "1"
    assert redis_client.exists(lease_key) == 0
    # after the success it never runs again
    assert tw.submit("tests.idem_work", ["crash", 1.5]).get(timeout=30) == value
    assert redis_client.get("crash:runs") == "2"


def test_lease_is_renewed_and_waiting_duplicates_spend_no_retries(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    # a 2 s lease over a 4 s run; the duplicate re-checks every 0.2 s: ~20 deferrals,
    # far more than the default policy's 3 retries
    start_worker(pool="threads", concurrency=2, env={
        "TASKWORKS_IDEMPOTENCY__LEASE_SECONDS": "2",
        "TASKWORKS_IDEMPOTENCY__WAIT_INTERVAL": "0.2"})
    first = tw.submit("tests.idem_work", ["long", 4.0])
    wait_for(lambda: redis_client.get("long:runs") == "1", what="the first run to start")
    duplicate = tw.submit("tests.idem_work", ["long", 4.0])
    assert first.get(timeout=30) == duplicate.get(timeout=30)
    assert redis_client.get("long:runs") == "1"  # the lease outlived its 2 s by renewal
    # deferrals are not retries: the duplicate's journal has no retry, and its one
    # success is its first attempt
    rows = wait_for(lambda: [r for r in attempts(tw.store, duplicate.id)
                             if r.state == "success"] and attempts(tw.store, duplicate.id),
                    what="the duplicate's journal rows")
    assert "retry" not in {r.state for r in rows}
    assert [r.attempt for r in rows if r.state == "success"] == [1]


def test_submit_dedupe_key_returns_the_queued_task_instead_of_sending_twice(
    tw: Any, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess],
) -> None:
    first = tw.submit("tests.record", ["d1", "dd:order"], dedupe_key="import-42")
    second = tw.submit("tests.record", ["d2", "dd:order"], dedupe_key="import-42")
    other = tw.submit("tests.record", ["d3", "dd:order"], dedupe_key="import-43")
    assert second.id == first.id != other.id
    assert redis_client.ttl(keys.dedupe("import-42")) > 86_000
    start_worker()
    first.get(timeout=30)
    other.get(timeout=30)
    assert sorted(x.split("|")[0] for x in redis_client.lrange("dd:order", 0, -1)) == ["d1", "d3"]
    with pytest.raises(InvalidInput, match="dedupe_ttl"):
        tw.submit("tests.record", ["x"], dedupe_key="k", dedupe_ttl=0)


def test_threads_that_race_to_the_first_client_all_see_the_scripts(
        tw: Any) -> None:
    """The threads pool's first tasks reach the client together: each must find it with
    its Lua scripts (the soak caught ``None(...)`` when both were made on first use), and
    all the same client (a second one, dropped, closes its pool under its user)."""
    from taskworks.resilience.idempotency import IdempotencyMiddleware

    seen: list[bool] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as CPython allows
    try:
        for _ in range(20):
            middleware = IdempotencyMiddleware(
                tw.settings.effective_broker_url, ttl_seconds=60, lease_seconds=5,
                wait_interval=0.1, max_hold=60)
            start = threading.Barrier(8)

            def first_use(mw: IdempotencyMiddleware = middleware,
                          barrier: threading.Barrier = start) -> None:
                barrier.wait()
                client = mw.client
                seen.append(mw._acquire is not None and mw._complete is not None
                            and client is mw.client)  # one client: none dropped

            threads = [threading.Thread(target=first_use) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert len(seen) == 160
    assert all(seen), f"{seen.count(False)} threads saw the client without its scripts"
