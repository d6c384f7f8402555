"""Where ``taskworks.http_call`` may connect: public addresses only, unless the settings
allow more (``http_call.allow_private_networks``, ``http_call.allowed_networks``).

The task's URL is whoever submitted it's choice, and its answer goes back to them:
without this, any submitter could read the cloud metadata service (169.254.169.254),
the broker, or any page inside the network (server-side request forgery).

The check sits where the connection is made: an httpcore network backend resolves the
host itself, checks every address it resolves to, then connects to one of those same
addresses. No second lookup happens between check and connect, so a name that answers
the check with a public address and the connect with a private one (DNS rebinding)
gains nothing. The URL is left as it is, so the Host header, TLS SNI and certificate
checks still use the name. A redirect to another host opens another connection: each
hop is checked. Spellings such as ``2130706433`` or ``0x7f000001`` are resolved by the
system like any name (to 127.0.0.1) and refused by address.

httpx has no public hook for its network backend: ``GuardedTransport`` is an
``httpx.HTTPTransport`` (keeping its request and error mapping) whose connection pool
is rebuilt with the guarded backend. A guarded client is given its transport, so it
ignores HTTP(S)_PROXY: a proxy would resolve and connect to the host itself, unchecked.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence

import httpcore
import httpx

from taskworks.errors import AddressRefused

__all__ = ["GuardedBackend", "GuardedTransport", "IPAddress", "IPNetwork", "check_address",
           "non_public", "resolve"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def non_public(ip: IPAddress) -> str | None:
    """What kind of non-public address ``ip`` is, or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address):
        # an IPv4 address carried in IPv6 reaches that IPv4 host: judge it by that
        inner = ip.ipv4_mapped or ip.sixtofour
        kind = non_public(inner) if inner is not None else None
        if kind is not None:
            return f"{kind} (IPv4 {inner} inside IPv6)"
        if ip.is_site_local:
            return "site-local"
    checks = (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
              ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
              ("private", ip.is_private), ("reserved", ip.is_reserved),
              ("non-global", not ip.is_global))  # e.g. shared 100.64.0.0/10
    return next((kind for kind, hit in checks if hit), None)


def check_address(host: str, address: str, allowed: Sequence[IPNetwork]) -> None:
    """Raise AddressRefused unless ``address`` is public or inside an allowed network."""
    ip = ipaddress.ip_address(address)
    kind = non_public(ip)
    if kind is None:
        return
    inner = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    if any(ip in net or (inner is not None and inner in net) for net in allowed):
        return
    raise AddressRefused(host, str(ip), kind)


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the system's order, without repeats."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:  # as httpcore's own backend reports a failed lookup
        raise httpcore.ConnectError(str(exc)) from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.SyncBackend):
    """Resolves, checks every address, connects only to a checked one."""

    def __init__(self, allowed: Sequence[IPNetwork]) -> None:
        self.allowed = tuple(allowed)

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
                    ) -> httpcore.NetworkStream:
        addresses = resolve(host, port)
        for address in addresses:  # all of them first: one bad answer refuses the host
            check_address(host, address, self.allowed)
        options = list(socket_options or ())
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:  # the next one when one does not answer, as browsers do
            try:
                return super().connect_tcp(address, port, timeout, local_address, options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # getaddrinfo never answers with no address
        raise failure


class GuardedTransport(httpx.HTTPTransport):
    """httpx's own transport, its connections made through GuardedBackend."""

    def __init__(self, allowed: Sequence[IPNetwork] = ()) -> None:
        super().__init__()
        self._pool = httpcore.ConnectionPool(ssl_context=httpx.create_ssl_context(),
                                             network_backend=GuardedBackend(allowed))
