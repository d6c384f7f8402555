"""Fallback answers: the last good result from Redis (JSON, TTL), or a registered function."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from taskworks import keys
from taskworks.errors import BreakerOpen, InvalidInput
from taskworks.resilience.breaker import BreakerState, CircuitBreaker
from taskworks.resilience.fallback import Fallback, FallbackFunctions
from tests.support.wait import wait_for


class Api:
    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    def price(self, item: str) -> dict[str, Any]:
        self.calls += 1
        if not self.up:
            raise ConnectionError("api down")
        return {"item": item, "price": 10 * self.calls}


@pytest.fixture
def breaker(broker_url: str, redis_client: redis.Redis) -> CircuitBreaker:
    return CircuitBreaker("api", broker_url, failure_threshold=2, reset_timeout=30,
                          count=(ConnectionError,))


def test_cached_answer_when_the_call_fails_then_when_the_breaker_is_open(
        breaker: CircuitBreaker, redis_client: redis.Redis) -> None:
    api, fallback = Api(), Fallback(breaker, ttl=60)
    fresh = fallback.call(api.price, "tea")
    assert fresh == {"item": "tea", "price": 10}  # a fresh answer is not marked
    [key] = redis_client.scan_iter(keys.breaker_cache("api", "*"))
    stored = json.loads(redis_client.get(key))
    assert stored["value"] == fresh
    api.up = False
    for _ in range(2):  # failing calls: answered from the cache, counted by the breaker
        answer = fallback.call(api.price, "tea")
        assert answer["status"] == "fallback"
        assert answer["value"] == fresh
        assert answer["cached_at"] == stored["cached_at"]
        assert answer["source"] == "cache"
        assert answer["reason"].startswith("ConnectionError")
    assert breaker.status().state is BreakerState.OPEN
    calls = api.calls
    answer = fallback.call(api.price, "tea")
    assert api.calls == calls  # open: the downstream is not touched
    assert answer["value"] == fresh
    assert answer["reason"].startswith("BreakerOpen")


def test_keys_separate_answers_and_an_explicit_key_is_used(breaker: CircuitBreaker) -> None:
    api, fallback = Api(), Fallback(breaker, ttl=60)
    fallback.call(api.price, "tea")
    fallback.call(api.price, "coffee", fallback_key="coffee")
    api.up = False
    assert fallback.call(api.price, "tea")["value"]["item"] == "tea"
    assert fallback.call(api.price, "other", fallback_key="coffee")["value"]["item"] == "coffee"


def test_nothing_cached_and_no_function_raises_the_original_error(
        breaker: CircuitBreaker) -> None:
    api, fallback = Api(), Fallback(breaker, ttl=60)
    api.up = False
    with pytest.raises(ConnectionError):
        fallback.call(api.price, "tea")
    with pytest.raises(ConnectionError):
        fallback.call(api.price, "tea")
    with pytest.raises(BreakerOpen):
        fallback.call(api.price, "tea")


def test_the_cache_expires(breaker: CircuitBreaker, redis_client: redis.Redis) -> None:
    api, fallback = Api(), Fallback(breaker, ttl=0.3)
    fallback.call(api.price, "tea")
    wait_for(lambda: not list(redis_client.scan_iter(keys.BREAKER_CACHE + "*")), timeout=5,
             what="the cached answer to expire")
    api.up = False
    with pytest.raises(ConnectionError):
        fallback.call(api.price, "tea")


def test_registered_function_answers_when_nothing_is_cached(breaker: CircuitBreaker) -> None:
    functions = FallbackFunctions()

    @functions.register("default_price")
    def default_price(item: str) -> dict[str, Any]:
        return {"item": item, "price": None}

    api = Api()
    api.up = False
    fallback = Fallback(breaker, ttl=None, function="default_price", functions=functions)
    answer = fallback.call(api.price, "tea")
    assert answer == {"status": "fallback", "value": {"item": "tea", "price": None},
                      "cached_at": None, "source": "function",
                      "reason": "ConnectionError: api down"}


def test_uncounted_errors_are_not_hidden(breaker: CircuitBreaker) -> None:
    fallback = Fallback(breaker, ttl=60)
    fallback.call(lambda: 1, fallback_key="k")

    def broken() -> int:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        fallback.call(broken, fallback_key="k")


def test_unknown_function_or_bad_ttl_is_refused_up_front(breaker: CircuitBreaker) -> None:
    with pytest.raises(InvalidInput, match="fallback"):
        Fallback(breaker, function="nope", functions=FallbackFunctions())
    with pytest.raises(InvalidInput, match="ttl"):
        Fallback(breaker, ttl=0)


def test_arguments_that_are_not_json_need_a_key(breaker: CircuitBreaker) -> None:
    fallback = Fallback(breaker)
    with pytest.raises(InvalidInput, match="fallback_key"):
        fallback.call(lambda x: 1, object())


def test_tw_breakers_fallback_uses_the_registry(tw: Any) -> None:
    @tw.breakers.fallbacks.register("tests.zero")
    def zero() -> int:
        return 0

    fallback = tw.breakers.fallback("tests.fallback", ttl=None, function="tests.zero")
    tw.breakers.get("tests.fallback").reset()
    for _ in range(fallback.breaker.config.failure_threshold):
        assert fallback.call(_raise_connection)["value"] == 0
    assert fallback.breaker.status().state is BreakerState.OPEN


def _raise_connection() -> int:
    raise ConnectionError("down")
