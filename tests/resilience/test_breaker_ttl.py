"""A breaker's Redis keys expire after it goes unused (an http_call host per breaker
would otherwise keep its hash, stream and name for ever): on the real Valkey."""

from __future__ import annotations

import pytest
import redis

from taskworks import keys
from taskworks.errors import InvalidInput
from taskworks.resilience.breaker import IDLE_TTL, CircuitBreaker
from taskworks.resilience.breaker_registry import Breakers
from taskworks.settings import BreakerSettings
from tests.support.wait import wait_for

DAY_MS = 86_400_000


def _down() -> None:
    raise ConnectionError("down")


def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            breaker.call(_down)


def test_every_key_written_gets_the_idle_expiry_refreshed_by_each_write(
        redis_client: redis.Redis) -> None:
    breaker = CircuitBreaker("http:a.example:443", redis_client, failure_threshold=2)
    assert breaker.config.idle_ttl == IDLE_TTL == 30 * 86_400
    fail(breaker, 2)  # opens: hash, transition stream and name written
    name = "http:a.example:443"
    for key in (keys.breaker(name), keys.breaker_events(name), keys.BREAKER_NAMES):
        assert 30 * DAY_MS - 60_000 < redis_client.pttl(key) <= 30 * DAY_MS, key
    redis_client.pexpire(keys.breaker(name), 1000)
    breaker.reset()
    assert redis_client.pttl(keys.breaker(name)) > 29 * DAY_MS


def test_registry_breakers_take_the_setting(broker_url: str, redis_client: redis.Redis) -> None:
    breakers = Breakers(broker_url, BreakerSettings(idle_days=2))
    fail(breakers.get("http:b.example:443"))
    assert 2 * DAY_MS - 60_000 < redis_client.pttl(keys.breaker("http:b.example:443")) \
        <= 2 * DAY_MS


def test_an_idle_breaker_disappears_state_and_name(broker_url: str,
                                                   redis_client: redis.Redis) -> None:
    breakers = Breakers(broker_url)
    breakers.register_family("http:", failure_threshold=1, idle_ttl=0.3)  # not listed
    fail(breakers.get("http:idle.example:443"))  # open
    assert "http:idle.example:443" in breakers.names()
    wait_for(lambda: not redis_client.exists(keys.breaker("http:idle.example:443"),
                                             keys.breaker_events("http:idle.example:443")),
             timeout=5, what="the idle breaker's keys to expire")
    # gone from the names once another breaker writes (or all of them went idle)
    fail(breakers.get("other"))
    assert breakers.names() == ["other"]
    assert breakers.show("other").failures == 1


def test_names_written_by_an_older_version_are_listed_then_age_out(
        broker_url: str, redis_client: redis.Redis) -> None:
    redis_client.sadd(keys.BREAKERS, "legacy")
    breakers = Breakers(broker_url)
    assert breakers.names() == ["legacy"]
    fail(breakers.get("new"))
    assert breakers.names() == ["legacy", "new"]
    assert 29 * DAY_MS < redis_client.pttl(keys.BREAKERS) <= 30 * DAY_MS


def test_no_expiry_when_asked(redis_client: redis.Redis) -> None:
    breaker = CircuitBreaker("forever", redis_client, idle_ttl=None)
    fail(breaker)
    assert redis_client.pttl(keys.breaker("forever")) == -1
    assert redis_client.zscore(keys.BREAKER_NAMES, "forever") is not None
    with pytest.raises(InvalidInput, match="idle_ttl"):
        CircuitBreaker("bad", redis_client, idle_ttl=0)
