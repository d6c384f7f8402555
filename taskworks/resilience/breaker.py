"""A circuit breaker shared by every process on every host: its state lives in Redis.

    closed ──(failure_threshold consecutive failures, or failure_rate over window)──► open
    open ──(reset_timeout elapsed, by the Redis server's clock)──► half_open
    half_open ──(the one probe succeeds)──► closed
    half_open ──(the one probe fails)──► open

Every transition happens inside one Lua script (``breaker.lua``), so concurrent callers
on many hosts never see a half-made change, and exactly one probe is admitted in
half-open across the cluster. A probe holds a lease (``probe_timeout``): if its process
dies, the next caller after the lease probes instead. Each admission decision is one
round trip to Redis, each outcome report another. Transitions are logged by the process
that caused them and journaled by the script in a capped stream per breaker.

Which exceptions are failures: instances of ``count`` that are not instances of
``ignore``. Any other ``Exception`` means the downstream answered, so it counts as a
success (pybreaker's rule); a ``BaseException`` that is not an ``Exception``
(KeyboardInterrupt, SystemExit) reports nothing and gives a probe back.
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from importlib import resources
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import redis

from taskworks import keys
from taskworks.broker.urls import redis_client
from taskworks.errors import BreakerOpen, InvalidInput
from taskworks.logs import get_logger
from taskworks.redaction import error_message

__all__ = ["IDLE_TTL", "Admission", "BreakerConfig", "BreakerState", "BreakerStatus",
           "CircuitBreaker", "Transition", "check_name", "connect", "known_names", "read_status"]

log = get_logger("taskworks.breaker")

P = ParamSpec("P")
T = TypeVar("T")

_LUA = (resources.files("taskworks.resilience") / "breaker.lua").read_text()
#: default expiry of a breaker's keys after its last write (settings: breaker.idle_days)
IDLE_TTL = 30 * 86_400.0
#: breaker names end up in Redis keys and CLI arguments: keep them plain
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-/@")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 200 or set(name) - _NAME_CHARS:
        raise InvalidInput("breaker", name, "a name of 1-200 letters, digits and . _ : - / @")
    return name


@dataclass(frozen=True)
class BreakerConfig:
    """How one breaker behaves. Frozen: every process must agree on it."""

    failure_threshold: int = 5
    reset_timeout: float = 30.0
    #: how long a half-open probe may run before another caller may probe instead
    probe_timeout: float = 60.0
    #: also open when this fraction of calls failed over ``window`` seconds (None: off),
    #: once at least ``min_calls`` calls were seen in the window
    failure_rate: float | None = None
    window: float = 60.0
    min_calls: int = 20
    count: tuple[type[BaseException], ...] = (Exception,)
    ignore: tuple[type[BaseException], ...] = ()
    #: seconds after its last write that the breaker's keys expire (None: never), so the
    #: state of a name no longer used (an http_call host) does not stay in Redis for ever
    idle_ttl: float | None = IDLE_TTL

    def __post_init__(self) -> None:
        checks = [
            ("failure_threshold", self.failure_threshold,
             isinstance(self.failure_threshold, int) and self.failure_threshold >= 1,
             "an integer >= 1"),
            ("reset_timeout", self.reset_timeout, _positive(self.reset_timeout), "seconds > 0"),
            ("probe_timeout", self.probe_timeout, _positive(self.probe_timeout), "seconds > 0"),
            ("failure_rate", self.failure_rate, self.failure_rate is None
             or (_positive(self.failure_rate) and self.failure_rate <= 1),
             "None or a fraction in (0, 1]"),
            ("window", self.window, _positive(self.window), "seconds > 0"),
            ("min_calls", self.min_calls, isinstance(self.min_calls, int)
             and self.min_calls >= 1, "an integer >= 1"),
            ("count", self.count, _exception_types(self.count), "a tuple of exception classes"),
            ("ignore", self.ignore, _exception_types(self.ignore),
             "a tuple of exception classes"),
            ("idle_ttl", self.idle_ttl, self.idle_ttl is None or _positive(self.idle_ttl),
             "None or seconds > 0"),
        ]
        for field, value, ok, expected in checks:
            if not ok:
                raise InvalidInput(f"CircuitBreaker.{field}", value, expected)

    def outcome(self, exc: BaseException | None) -> str:
        """``success``, ``failure`` or ``release`` (report nothing) for a call's outcome."""
        if exc is None or isinstance(exc, self.ignore):
            return "success"
        if isinstance(exc, self.count):
            return "failure"
        return "success" if isinstance(exc, Exception) else "release"


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _exception_types(value: object) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(t, type) and issubclass(t, BaseException) for t in value)


@dataclass(frozen=True)
class Admission:
    """One admitted call: ``probe`` when it is the single probe of a half-open breaker."""

    state: BreakerState
    probe: bool = False
    token: str = ""


@dataclass(frozen=True)
class Transition:
    from_state: str
    to_state: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class BreakerStatus:
    """A breaker as stored in Redis, read at one moment."""

    name: str
    state: BreakerState
    #: consecutive failures counted while closed
    failures: int
    successes: int
    failures_total: int
    #: seconds until an open breaker may admit a probe (0 when not open)
    retry_after: float
    probe_in_flight: bool
    changed_at: datetime | None
    last_transition: str | None
    last_reason: str | None
    last_error: str | None
    transitions: int
    failure_threshold: int | None
    reset_timeout: float | None
    recent: tuple[Transition, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "state": self.state.value, "failures": self.failures,
            "successes": self.successes, "failures_total": self.failures_total,
            "retry_after": self.retry_after, "probe_in_flight": self.probe_in_flight,
            "changed_at": self.changed_at.isoformat() if self.changed_at else None,
            "last_transition": self.last_transition, "last_reason": self.last_reason,
            "last_error": self.last_error, "transitions": self.transitions,
            "failure_threshold": self.failure_threshold, "reset_timeout": self.reset_timeout,
            "recent": [{"from": t.from_state, "to": t.to_state, "reason": t.reason,
                        "at": t.at.isoformat()} for t in self.recent],
        }


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _moment(ms: Any) -> datetime | None:
    if ms in (None, b"", "", b"0", "0"):
        return None
    return datetime.fromtimestamp(int(_text(ms)) / 1000, UTC)


def connect(target: str | redis.Redis) -> redis.Redis:
    if isinstance(target, redis.Redis):
        return target
    if isinstance(target, str):
        return redis_client(target)
    raise InvalidInput("redis", target, "a redis:// URL or a redis.Redis client")


class CircuitBreaker:
    """``CircuitBreaker("payments", "redis://...", failure_threshold=3, reset_timeout=10)``.

    Use it as ``breaker.call(fn, *args)``, as a decorator (``@breaker``) or as a context
    manager (``with breaker: ...``). While open it raises BreakerOpen without calling.
    """

    def __init__(self, name: str, redis_target: str | redis.Redis, *,
                 failure_threshold: int = 5, reset_timeout: float = 30.0,
                 probe_timeout: float = 60.0, failure_rate: float | None = None,
                 window: float = 60.0, min_calls: int = 20,
                 count: tuple[type[BaseException], ...] = (Exception,),
                 ignore: tuple[type[BaseException], ...] = (),
                 idle_ttl: float | None = IDLE_TTL) -> None:
        self.name = check_name(name)
        self.config = BreakerConfig(
            failure_threshold=failure_threshold, reset_timeout=reset_timeout,
            probe_timeout=probe_timeout, failure_rate=failure_rate, window=window,
            min_calls=min_calls, count=count, ignore=ignore, idle_ttl=idle_ttl)
        self.client = connect(redis_target)
        self._script = self.client.register_script(_LUA)
        self._keys = [keys.breaker(name), keys.breaker_window(name),
                      keys.breaker_window(name) + ":failures", keys.breaker_events(name),
                      keys.BREAKER_NAMES, keys.BREAKERS]
        c = self.config
        self._args = [str(c.failure_threshold), str(round(c.reset_timeout * 1000)),
                      str(round(c.probe_timeout * 1000)), repr(c.failure_rate or 0),
                      str(round(c.window * 1000)), str(c.min_calls)]
        self._idle_ms = str(round(c.idle_ttl * 1000)) if c.idle_ttl else "0"
        self._local = threading.local()  # the admissions of `with breaker:` blocks

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, {self.config})"

    # -- the two round trips ------------------------------------------------------------
    def _run(self, op: str, token: str = "", detail: str = "") -> tuple[int, str, float]:
        code, state, retry_ms, previous = self._script(
            keys=self._keys, args=[op, self.name, token, *self._args, detail, self._idle_ms])
        state_text = _text(state)
        if previous:
            log.warning("circuit breaker transition", breaker=self.name,
                        transition=f"{_text(previous)}->{state_text}", detail=detail or None)
        return int(code), state_text, int(retry_ms) / 1000

    def try_admit(self) -> Admission | BreakerOpen:
        """Ask whether a call may go through: an Admission, or the BreakerOpen to raise."""
        token = uuid.uuid4().hex
        code, state, retry_after = self._run("admit", token)
        if code == 0:
            return BreakerOpen(self.name, retry_after)
        probe = code == 2
        return Admission(BreakerState(state), probe, token if probe else "")

    def admit(self) -> Admission:
        """Admit a call or raise BreakerOpen (then do not touch the downstream)."""
        admission = self.try_admit()
        if isinstance(admission, BreakerOpen):
            raise admission
        return admission

    def record(self, admission: Admission, exc: BaseException | None = None) -> str:
        """Report how an admitted call ended; returns the breaker's state afterwards."""
        outcome = self.config.outcome(exc)
        if outcome == "release" and not admission.probe:
            return admission.state.value  # nothing to report, nothing to give back
        # last_error, a transition's reason and its log line: no values from the message
        detail = "" if exc is None else f"{type(exc).__name__}: {error_message(exc)}"[:200]
        return self._run(outcome, admission.token, detail)[1]

    def release(self, admission: Admission) -> None:
        """Give back an admission whose call never ran (a probe lets another caller in)."""
        if admission.probe:
            self._run("release", admission.token)

    # -- ways to guard a call -----------------------------------------------------------
    def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        admission = self.admit()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            self.record(admission, exc)
            raise
        self.record(admission)
        return result

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            return self.call(fn, *args, **kwargs)

        return guarded

    def __enter__(self) -> Admission:
        admission = self.admit()
        stack: list[Admission] = self._local.__dict__.setdefault("stack", [])
        stack.append(admission)
        return admission

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.record(self._local.stack.pop(), exc)

    # -- inspection and operation -------------------------------------------------------
    def reset(self, reason: str = "reset by operator") -> None:
        """Close the breaker now (journaled like any transition)."""
        self._run("reset", detail=reason)

    def status(self, recent: int = 0) -> BreakerStatus:
        return read_status(self.client, self.name, recent)


def known_names(client: redis.Redis) -> set[str]:
    """Names with state: written within their idle expiry (and any an older version
    listed, until that list expires)."""
    pipe = client.pipeline(transaction=False)
    pipe.zrange(keys.BREAKER_NAMES, 0, -1)
    pipe.smembers(keys.BREAKERS)
    scored, legacy = pipe.execute()
    return {_text(n) for n in (*scored, *legacy)}


def read_status(client: redis.Redis, name: str, recent: int = 0) -> BreakerStatus:
    """The stored state of ``name`` (closed with zero counts if it has none yet).

    One MULTI round trip, so the hash, the journal and the server time agree.
    """
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(keys.breaker(name))
    pipe.xrevrange(keys.breaker_events(name), count=max(recent, 1))
    pipe.time()
    raw, events, (secs, micros) = pipe.execute()
    h = {_text(k): _text(v) for k, v in raw.items()}
    now_ms = int(secs) * 1000 + int(micros) // 1000
    state = BreakerState(h.get("state", "closed"))
    open_until = int(h.get("open_until") or 0)
    probe_until = int(h.get("probe_until") or 0)
    fields = [{_text(k): _text(v) for k, v in f.items()} for _id, f in events[:recent]]
    transitions = tuple(
        Transition(f["from"], f["to"], f["reason"], _moment(f["at"]) or datetime.now(UTC))
        for f in fields
    )
    reset_ms = h.get("reset_timeout_ms")
    return BreakerStatus(
        name=name, state=state, failures=int(h.get("failures") or 0),
        successes=int(h.get("successes") or 0),
        failures_total=int(h.get("failures_total") or 0),
        retry_after=max(0, open_until - now_ms) / 1000 if state is BreakerState.OPEN else 0.0,
        probe_in_flight=state is BreakerState.HALF_OPEN and probe_until > now_ms,
        changed_at=_moment(h.get("changed_at")), last_transition=h.get("last_transition"),
        last_reason=h.get("last_reason"), last_error=h.get("last_error"),
        transitions=int(h.get("transitions") or 0),
        failure_threshold=int(h["failure_threshold"]) if "failure_threshold" in h else None,
        reset_timeout=int(reset_ms) / 1000 if reset_ms else None,
        recent=transitions,
    )
