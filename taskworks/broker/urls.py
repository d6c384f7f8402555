"""Broker URLs that every client reads the same way, and taskworks' own Redis clients.

Three libraries read the broker URL: kombu (the broker connection), Celery's result
backend and redis-py (taskworks' own clients: API, supervisor, breakers, rate limits,
idempotency, retry budgets, beat's lease, notifications). They agree on less than the
URL suggests:

- only ``redis://`` and ``rediss://`` are known to all three: kombu and Celery have no
  ``valkey://``, redis-py has no ``valkey://`` either, and ``unix://`` is redis-py's
  alone (kombu and Celery spell a socket ``redis+socket://``);
- a ``rediss://`` URL without ``ssl_cert_reqs``: redis-py verifies the certificate,
  Celery's result backend refuses to start, kombu connects *without* verifying it
  (and with the broker transport taskworks configures, without TLS at all);
- ``ssl_cert_reqs`` values: redis-py takes only ``required``, ``optional``, ``none``.

``normalise`` turns a URL the settings accept into the one form all three read alike:
valkey(s):// becomes redis(s)://, and a rediss:// URL verifies the server's certificate
unless it says otherwise (``ssl_cert_reqs=required`` is added when absent, as https://
would). Anything it cannot make consistent is refused with the reason.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

import redis

__all__ = ["CERT_REQS", "SCHEMES", "SCHEME_ALIASES", "TLS_PARAMS", "normalise", "redis_client"]

#: accepted for Valkey users; rewritten to the scheme every client knows
SCHEME_ALIASES = {"valkey": "redis", "valkeys": "rediss"}
SCHEMES = ("redis", "rediss", *SCHEME_ALIASES)
#: the values of ssl_cert_reqs that kombu, Celery and redis-py all accept
CERT_REQS = ("required", "optional", "none")
#: query parameters that configure TLS: they mean nothing (or an error) on redis://
TLS_PARAMS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
              "ssl_check_hostname")


def normalise(url: str) -> str:
    """``url`` as kombu, Celery and redis-py all read it; ValueError says what is wrong.

    The message starts with what was expected, for the settings' "field: got value:"
    line; it never repeats the URL (which may hold a password).
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or not rest or scheme not in SCHEMES:
        unix = " (unix:// sockets are not supported: kombu and Celery's result backend " \
               "cannot read them)" if scheme == "unix" else ""
        raise ValueError(f"expected a Redis/Valkey URL such as redis://host:6379/0 "
                         f"(schemes: {', '.join(SCHEMES)}){unix}")
    scheme = SCHEME_ALIASES.get(scheme, scheme)
    params = dict(parse_qsl(rest.partition("?")[2], keep_blank_values=True))
    tls = [name for name in TLS_PARAMS if name in params]
    if scheme == "redis" and tls:
        raise ValueError(f"expected rediss:// (or valkeys://) with TLS parameters "
                         f"({', '.join(tls)}): redis:// is plain TCP")
    if scheme == "rediss":
        reqs = params.get("ssl_cert_reqs")
        if reqs is None:
            joint = "" if rest.endswith(("?", "&")) else "&" if "?" in rest else "?"
            rest += joint + "ssl_cert_reqs=required"
        elif reqs not in CERT_REQS:
            raise ValueError(f"expected ssl_cert_reqs to be one of {', '.join(CERT_REQS)} "
                             f"(got {reqs!r}; required verifies the server's certificate)")
    return f"{scheme}://{rest}"


def redis_client(url: str, **options: Any) -> redis.Redis:
    """A redis-py client on ``url``, any URL the settings accept (``options`` as from_url's)."""
    return redis.Redis.from_url(normalise(url), **options)
