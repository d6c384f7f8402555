"""The circuit breaker on the real Valkey: transitions, one probe across 8 processes, journal."""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import time
from typing import Any

import pytest
import redis

from taskworks import keys
from taskworks.errors import BreakerOpen, InvalidInput
from taskworks.resilience.breaker import BreakerState, CircuitBreaker
from tests.support.wait import wait_for


class Downstream:
    """A callable that fails while ``failing`` and counts every time it is touched."""

    def __init__(self) -> None:
        self.calls = 0
        self.failing = True

    def __call__(self, value: int = 1) -> int:
        self.calls += 1
        if self.failing:
            raise ConnectionError("downstream is down")
        return value


def fail_n(breaker: CircuitBreaker, n: int) -> None:
    down = Downstream()
    for _ in range(n):
        with pytest.raises(ConnectionError):
            breaker.call(down)


def journal(client: redis.Redis, name: str) -> list[tuple[str, str]]:
    return [(f["from"], f["to"]) for _id, f in client.xrange(keys.breaker_events(name))]


def assert_consistent(chain: list[tuple[str, str]]) -> None:
    """Each transition starts where the previous one ended, and changes something."""
    for (_a, to), (frm, _b) in itertools.pairwise(chain):
        assert frm == to, chain


def test_opens_after_consecutive_failures_then_fails_fast(
        redis_client: redis.Redis, broker_url: str) -> None:
    breaker = CircuitBreaker("svc", broker_url, failure_threshold=3, reset_timeout=30)
    down = Downstream()
    for _ in range(3):
        with pytest.raises(ConnectionError):
            breaker.call(down)
    assert breaker.status().state is BreakerState.OPEN
    with pytest.raises(BreakerOpen) as refused:
        breaker.call(down)
    assert down.calls == 3  # refused without touching the downstream
    assert refused.value.name == "svc"
    assert 25 < refused.value.retry_after <= 30
    assert journal(redis_client, "svc") == [("closed", "open")]


def test_a_success_resets_the_consecutive_count(broker_url: str, redis_client: Any) -> None:
    breaker = CircuitBreaker("svc", broker_url, failure_threshold=3)
    down = Downstream()
    for _ in range(5):
        fail_n(breaker, 2)
        down.failing = False
        assert breaker.call(down, 7) == 7
    status = breaker.status()
    assert status.state is BreakerState.CLOSED
    assert (status.failures, status.failures_total, status.successes) == (0, 10, 5)


def test_half_open_admits_one_probe_success_closes_failure_reopens(
        redis_client: redis.Redis, broker_url: str) -> None:
    breaker = CircuitBreaker("svc", broker_url, failure_threshold=1, reset_timeout=0.2)
    fail_n(breaker, 1)
    probe = wait_for(lambda: _admitted(breaker), timeout=5, what="a probe")
    assert probe.probe
    assert probe.state is BreakerState.HALF_OPEN
    assert isinstance(breaker.try_admit(), BreakerOpen)  # one probe at a time
    breaker.record(probe, ConnectionError("still down"))
    assert breaker.status().state is BreakerState.OPEN
    probe = wait_for(lambda: _admitted(breaker), timeout=5, what="a second probe")
    assert breaker.record(probe) == "closed"
    assert breaker.call(lambda: 5) == 5
    chain = journal(redis_client, "svc")
    assert chain == [("closed", "open"), ("open", "half_open"), ("half_open", "open"),
                     ("open", "half_open"), ("half_open", "closed")]
    recent = breaker.status(recent=2).recent
    assert [(t.from_state, t.to_state) for t in recent] == [("half_open", "closed"),
                                                            ("open", "half_open")]
    assert recent[0].reason == "probe succeeded"


def _admitted(breaker: CircuitBreaker) -> Any:
    admission = breaker.try_admit()
    return None if isinstance(admission, BreakerOpen) else admission


def test_a_dead_probe_frees_its_slot_after_the_probe_timeout(broker_url: str,
                                                             redis_client: Any) -> None:
    breaker = CircuitBreaker("svc", broker_url, failure_threshold=1, reset_timeout=0.1,
                             probe_timeout=0.3)
    fail_n(breaker, 1)
    lost = wait_for(lambda: _admitted(breaker), timeout=5, what="a probe")  # then "dies"
    assert isinstance(breaker.try_admit(), BreakerOpen)
    second = wait_for(lambda: _admitted(breaker), timeout=5, what="a probe after the lease")
    assert second.probe
    assert second.token != lost.token
    assert breaker.record(lost) == "half_open"  # the stale probe decides nothing
    assert breaker.record(second) == "closed"


def test_failure_rate_over_the_window_opens(broker_url: str, redis_client: Any) -> None:
    breaker = CircuitBreaker("svc", broker_url, failure_threshold=100, failure_rate=0.5,
                             window=60, min_calls=10)
    down = Downstream()
    for i in range(9):  # 4 of 9 failed: below the rate, and below min_calls anyway
        down.failing = i % 2 == 1
        with contextlib.suppress(ConnectionError):
            breaker.call(down)
    assert breaker.status().state is BreakerState.CLOSED
    fail_n(breaker, 1)  # 5 of 10
    status = breaker.status()
    assert status.state is BreakerState.OPEN
    assert status.last_reason is not None
    assert "failure rate 5/10" in status.last_reason


def test_which_exceptions_count(broker_url: str, redis_client: Any) -> None:
    class Throttled(ConnectionError):
        pass

    breaker = CircuitBreaker("svc", broker_url, failure_threshold=1, count=(ConnectionError,),
                             ignore=(Throttled,))

    def raise_(exc: BaseException) -> None:
        raise exc

    for exc in (ValueError("bad input"), Throttled("slow down")):
        with pytest.raises(type(exc)):
            breaker.call(raise_, exc)
    status = breaker.status()
    assert status.state is BreakerState.CLOSED
    assert status.successes == 2
    with pytest.raises(ConnectionError):
        breaker.call(raise_, ConnectionError("down"))
    assert breaker.status().state is BreakerState.OPEN


def test_decorator_and_context_manager(broker_url: str, redis_client: Any) -> None:
    breaker = CircuitBreaker("svc", broker_url, failure_threshold=2)
    down = Downstream()

    @breaker
    def fetch(value: int) -> int:
        return down(value)

    with pytest.raises(ConnectionError), breaker:
        down()
    with pytest.raises(ConnectionError):
        fetch(1)
    with pytest.raises(BreakerOpen), breaker:
        down()
    assert down.calls == 2
    breaker.reset()
    down.failing = False
    with breaker as admission:
        assert down(3) == 3
    assert admission.state is BreakerState.CLOSED
    assert not admission.probe
    assert fetch(4) == 4
    assert journal(redis_client, "svc") == [("closed", "open"), ("open", "closed")]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"failure_threshold": 0}, "failure_threshold"), ({"reset_timeout": -1}, "reset_timeout"),
    ({"failure_rate": 1.5}, "failure_rate"), ({"count": (int,)}, "count"),
    ({"min_calls": 0}, "min_calls"),
])
def test_bad_configuration_is_refused(broker_url: str, kwargs: dict[str, Any],
                                      field: str) -> None:
    with pytest.raises(InvalidInput, match=field):
        CircuitBreaker("svc", broker_url, **kwargs)


def test_bad_name_is_refused(broker_url: str) -> None:
    with pytest.raises(InvalidInput, match="breaker"):
        CircuitBreaker("has space", broker_url)


def test_state_is_shared_by_separate_breaker_objects(broker_url: str,
                                                     redis_client: Any) -> None:
    """Two processes' breakers of one name are one breaker: the state is in Redis."""
    first = CircuitBreaker("svc", broker_url, failure_threshold=2)
    second = CircuitBreaker("svc", redis.Redis.from_url(broker_url), failure_threshold=2)
    fail_n(first, 1)
    fail_n(second, 1)
    with pytest.raises(BreakerOpen):
        first.call(lambda: 1)


# -- 8 processes, one breaker ------------------------------------------------------------
PROCESSES = 8


def _race_for_the_probe(url: str, rounds: int, barrier: Any, results: Any) -> None:
    """Each round: wait for the others, then all ask for admission at once."""
    breaker = CircuitBreaker("shared", url, failure_threshold=1, reset_timeout=0.05,
                             probe_timeout=30)
    for _ in range(rounds):
        barrier.wait()
        admission = breaker.try_admit()
        won = not isinstance(admission, BreakerOpen)
        results.put(won)
        barrier.wait()  # everyone has asked: now the winner reports a failure
        if won:
            breaker.record(admission, ConnectionError("still down"))
        barrier.wait()
        time.sleep(0.06)  # past reset_timeout: the next round starts half-open-ready


def _hammer(url: str, seconds: float) -> None:
    """Ask for admission as fast as possible; a probe checks no other probe is in flight."""
    client = redis.Redis.from_url(url)
    breaker = CircuitBreaker("shared", client, failure_threshold=1, reset_timeout=0.01,
                             probe_timeout=30)
    deadline = time.monotonic() + seconds
    flip = False
    while time.monotonic() < deadline:
        admission = breaker.try_admit()
        if isinstance(admission, BreakerOpen) or not admission.probe:
            continue
        in_flight = int(client.incr("tests:in-flight"))
        client.rpush("tests:probes", in_flight)
        time.sleep(0.002)
        client.decr("tests:in-flight")
        flip = not flip  # alternate: failure re-opens, success closes
        breaker.record(admission, ConnectionError("down") if flip else None)
        if not flip:
            fail_n(breaker, 1)  # closed again: open it for the next probe


def _clean_processes() -> Any:
    """Processes forked from a fresh server, not from pytest's process: a fork copies the
    locks other threads hold (an earlier test's heartbeat writing a log line), and a
    child that needs one waits for ever."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["taskworks.resilience.breaker", "redis"])
    return ctx


def test_eight_processes_exactly_one_probe_per_half_open(
        broker_url: str, redis_client: redis.Redis) -> None:
    ctx = _clean_processes()
    rounds = 6
    fail_n(CircuitBreaker("shared", broker_url, failure_threshold=1, reset_timeout=0.05), 1)
    time.sleep(0.06)
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_race_for_the_probe, args=(broker_url, rounds, barrier, results))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=30) for _ in range(PROCESSES * rounds)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    per_round = [outcomes[i * PROCESSES:(i + 1) * PROCESSES] for i in range(rounds)]
    assert sum(outcomes) == rounds, per_round  # exactly one winner in each round
    chain = journal(redis_client, "shared")
    assert chain == [("closed", "open")] + [("open", "half_open"), ("half_open", "open")] * rounds


def test_eight_processes_hammering_never_overlap_probes(
        broker_url: str, redis_client: redis.Redis) -> None:
    ctx = _clean_processes()
    fail_n(CircuitBreaker("shared", broker_url, failure_threshold=1, reset_timeout=0.01), 1)
    procs = [ctx.Process(target=_hammer, args=(broker_url, 2.0)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    probes = [int(v) for v in redis_client.lrange("tests:probes", 0, -1)]
    assert len(probes) >= 10  # the breaker really cycled
    assert set(probes) == {1}  # never two probes at once
    chain = journal(redis_client, "shared")
    assert_consistent(chain)
    assert ("open", "half_open") in chain
    # the journal is capped (XADD MAXLEN ~ 100: whole nodes of 100 entries are trimmed)
    total = int(redis_client.hget(keys.breaker("shared"), "transitions"))
    assert len(chain) == total if total <= 100 else len(chain) <= min(total, 200)
