"""``tw.breakers``: defaults from settings, registered and family configurations, lookup."""

from __future__ import annotations

from typing import Any

import pytest

from taskworks.errors import ConfigError, InvalidInput
from taskworks.resilience.breaker import BreakerState
from taskworks.resilience.breaker_registry import Breakers
from taskworks.settings import BreakerSettings, load_settings


def test_settings_defaults_then_family_then_own_configuration(broker_url: str,
                                                              redis_client: Any) -> None:
    breakers = Breakers(broker_url, BreakerSettings(failure_threshold=7, reset_timeout=9))
    assert breakers.get("plain").config.failure_threshold == 7
    assert breakers.get("plain").config.reset_timeout == 9
    breakers.register_family("http:", failure_threshold=2, count=(ConnectionError,))
    host = breakers.get("http:example.org:443")
    assert (host.config.failure_threshold, host.config.reset_timeout) == (2, 9)
    assert host.config.count == (ConnectionError,)
    breakers.register("http:special:80", reset_timeout=1)
    special = breakers.get("http:special:80")
    assert (special.config.failure_threshold, special.config.reset_timeout) == (2, 1)
    again = breakers.register("http:special:80", failure_threshold=4)  # replaces, not merges
    assert (again.config.failure_threshold, again.config.reset_timeout) == (4, 9)
    assert breakers.get("http:special:80") is again


def test_names_list_show_reset(broker_url: str, redis_client: Any) -> None:
    breakers = Breakers(broker_url)
    breakers.register("registered")
    used = breakers.get("used")
    with pytest.raises(ConnectionError):
        used.call(_down)
    assert breakers.names() == ["registered", "used"]
    assert [s.state for s in breakers.list()] == [BreakerState.CLOSED, BreakerState.CLOSED]
    assert breakers.show("used").failures == 1
    assert breakers.reset("used").failures == 0
    with pytest.raises(InvalidInput, match="known breaker"):
        breakers.show("never.seen")
    with pytest.raises(InvalidInput, match="known breaker"):
        breakers.reset("never.seen")


def _down() -> None:
    raise ConnectionError("down")


def test_bad_registration_is_refused_at_once(broker_url: str) -> None:
    breakers = Breakers(broker_url)
    with pytest.raises(InvalidInput, match="failure_threshold"):
        breakers.register("x", failure_threshold=0)
    with pytest.raises(InvalidInput, match="reset_timeout"):
        breakers.register_family("fam:", reset_timeout=0)
    with pytest.raises(InvalidInput, match="breaker"):
        breakers.get("bad name")


def test_breaker_settings_validate() -> None:
    assert load_settings(breaker={"failure_threshold": 3}).breaker.failure_threshold == 3
    with pytest.raises(ConfigError, match=r"breaker\.reset_timeout"):
        load_settings(breaker={"reset_timeout": 0})


def test_tw_breakers_uses_the_settings(tw: Any) -> None:
    assert tw.breakers.defaults == tw.settings.breaker
    assert tw.breakers.get("tests.guarded").config.failure_threshold == 2
