"""Built-in task ``taskworks.http_call`` (the patterns guide's resilient_api_call), on httpx.

Connection errors, timeouts, 5xx and 429 raise HttpUnavailable: retried with backoff by
the retry policy registered for the task (``tw.retry_policies.register(HTTP_CALL, ...)``
replaces it), never sooner than the server's Retry-After. Any other 4xx raises
HttpRejected with the status and an excerpt of the body: never retried. Every host has
its own circuit breaker (``http:<host>:<port>``, settings' defaults, only
HttpUnavailable counts): while it is open, calls to that host are deferred without
touching it. Pass ``breaker=False`` to go without, or ``breaker="name"`` to share one.

The task connects to public addresses only: a host that resolves to a loopback, private,
link-local or otherwise non-public address raises HttpRejected before any connection,
unless ``http_call.allow_private_networks`` or ``http_call.allowed_networks`` allow it
(http_guard.py). ``http_request`` applies the same check when given those settings.

Returns ``{"status", "headers", "url", "json"}`` for a JSON body, ``"text"`` otherwise.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from taskworks.declaring import TaskDecorator
from taskworks.errors import AddressRefused, HttpRejected, HttpUnavailable, InvalidInput
from taskworks.redaction import url_for_display
from taskworks.resilience.breaker_registry import Breakers
from taskworks.runtime.progress import progress
from taskworks.runtime.retry import RetryPolicies, RetryPolicy
from taskworks.settings import HttpCallSettings
from taskworks.tasks.http_guard import GuardedTransport

__all__ = ["ALLOW_HINT", "DEFAULT_POLICY", "EXCERPT_CHARS", "HTTP_CALL", "METHODS", "breaker_for",
           "check_call", "excerpt", "host_key", "http_request", "register", "retry_after_seconds"]

HTTP_CALL = "taskworks.http_call"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
#: how a refusal says what to change
ALLOW_HINT = ("to allow it, add its network to http_call.allowed_networks "
              "(TASKWORKS_HTTP_CALL__ALLOWED_NETWORKS) or set http_call.allow_private_networks")
#: characters of a failed response's body kept in the error
EXCERPT_CHARS = 300
#: the patterns guide's policy for resilient_api_call, retrying only what may succeed later
DEFAULT_POLICY = RetryPolicy(max_retries=5, base_delay=2.0, max_delay=120.0,
                             retry_on=(HttpUnavailable,))


def host_key(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"


def breaker_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The breaker guarding one call: the host's unless the call chose otherwise."""
    choice = kwargs.get("breaker", True)
    if choice is False or choice is None:
        return None
    if isinstance(choice, str):
        return choice
    url = args[0] if args else kwargs.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        return None  # the body refuses the URL with a clear error
    return f"http:{host_key(url)}"


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def excerpt(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    if len(text) > EXCERPT_CHARS:
        return text[:EXCERPT_CHARS] + f"... [{len(text) - EXCERPT_CHARS} more characters]"
    return text or "(empty body)"


def check_call(url: object, method: object, timeout: object) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") \
            or not urlsplit(url).hostname:
        raise InvalidInput("url", url, "an http:// or https:// URL")
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise InvalidInput("method", method, f"one of {', '.join(METHODS)}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise InvalidInput("timeout", timeout, "seconds > 0")
    return method.upper()


def http_request(url: str, method: str = "GET", *, headers: dict[str, str] | None = None,
                 params: dict[str, Any] | None = None, json: Any = None,
                 data: str | None = None, timeout: float = 30.0,
                 guard: HttpCallSettings | None = None) -> dict[str, Any]:
    """One attempt: the answer as a dict, or HttpUnavailable / HttpRejected.

    ``guard`` (the task passes ``tw.settings.http_call``) refuses non-public addresses
    the settings do not allow; None connects anywhere, for URLs your own code chose.
    """
    method = check_call(url, method, timeout)
    # errors show the URL without credentials and query values: they are journaled,
    # dead-lettered, notified, kept as breaker last_error and in the result backend
    shown = url_for_display(url)
    transport = None if guard is None or guard.allow_private_networks \
        else GuardedTransport(guard.allowed_networks)
    try:
        with httpx.Client(transport=transport, timeout=timeout,
                          follow_redirects=True) as client:
            response = client.request(method, url, headers=headers, params=params,
                                      json=json, content=data)
    except AddressRefused as exc:
        raise HttpRejected(method, shown, None,
                           f"refused before connecting: {exc}; {ALLOW_HINT}") from exc
    except httpx.InvalidURL as exc:
        raise InvalidInput("url", url, f"a valid http(s) URL ({exc})") from exc
    except httpx.TimeoutException as exc:
        raise HttpUnavailable(method, shown, None,
                              f"timed out after {timeout}s ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise HttpUnavailable(method, shown, None, f"{type(exc).__name__}: {exc}") from exc
    status = response.status_code
    if status >= 500 or status == 429:
        raise HttpUnavailable(method, shown, status, excerpt(response),
                              retry_after_seconds(response.headers.get("retry-after")))
    if status >= 400:
        raise HttpRejected(method, shown, status, excerpt(response))
    answer: dict[str, Any] = {"status": status, "headers": dict(response.headers),
                              "url": str(response.url)}
    if "json" in response.headers.get("content-type", ""):
        try:
            answer["json"] = response.json()
            return answer
        except ValueError:
            pass  # labelled JSON but is not: hand over the text
    answer["text"] = response.text
    return answer


def register(declare: TaskDecorator, policies: RetryPolicies, breakers: Breakers,
             guard: HttpCallSettings) -> None:
    """Declare ``taskworks.http_call`` with ``declare`` (``tw.task``), its retry policy and
    its per-host breakers; ``guard`` says which addresses it may reach."""
    policies.register(HTTP_CALL, DEFAULT_POLICY)
    breakers.register_family("http:", count=(HttpUnavailable,))

    @declare(name=HTTP_CALL, breaker=breaker_for)
    def _http_call(url: str, method: str = "GET", headers: dict[str, str] | None = None,
                   params: dict[str, Any] | None = None, json: Any = None,
                   data: str | None = None, timeout: float = 30.0,
                   breaker: bool | str = True) -> dict[str, Any]:
        # ``breaker`` is read by the breaker middleware, through breaker_for
        verb = check_call(url, method, timeout)
        progress(0, 2, f"{verb} {url_for_display(url)}")
        answer = http_request(url, verb, headers=headers, params=params, json=json,
                              data=data, timeout=timeout, guard=guard)
        progress(1, 2, f"HTTP {answer['status']}")
        return answer
