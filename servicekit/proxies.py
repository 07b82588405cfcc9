"""Trusted proxies: which peers' word on the original request is believed, and the client address behind them.

``networks`` parses a CIDR list setting (``BFF_TRUSTED_PROXIES``, ``AUTH_TRUSTED_PROXIES``); ``TrustedProxies``
answers "is this peer one of them?"; ``client_address`` finds the address a request really came from: the TCP peer,
or — when the peer is a trusted proxy — the right-most ``X-Forwarded-For`` entry that is not a trusted proxy itself
(each proxy appends the address it was connected from, so entries to the left of the first untrusted one may be
forged by the client; MDN X-Forwarded-For, "Selecting an IP address").

A service listening on a Unix socket (``bff serve --uds``) has peers without an address: they are trusted only when
the list names ``unix`` (``networks(..., unix=True)``), and then whoever may connect to the socket — its file's and
directory's permissions say who — is a trusted proxy. Which peer is one is ``peer(scope)``'s to say: a TCP peer has
no address either when it reset its connection before the server accepted it (uvicorn reads the address then, and
Linux still delivers the bytes it sent), and such a peer must not pass for the socket's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from servicekit.settings import SettingsError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_TRUST_CACHE = 1024  # peer address -> trusted, for the few addresses proxies connect from
_XFF_LIMIT = 64  # entries of X-Forwarded-For looked at, right to left: a longer chain is not a real one
UNIX = "unix"  # in a list of trusted proxies: the peers on the service's Unix socket


def networks(name: str, raw: str, *, unix: bool = False) -> tuple[IPNetwork | str, ...]:
    """Comma-separated CIDRs (a bare address is a /32 or /128); a typo fails start-up naming ``name``.
    ``none``: no peer at all (said explicitly, as ``bff stack`` does). ``unix`` (where allowed): the peers on the
    service's Unix socket."""
    if raw.strip().lower() == "none":
        return ()
    found: list[IPNetwork | str] = []
    for part in raw.split(","):
        if not part.strip():
            continue
        if unix and part.strip().lower() == UNIX:
            found.append(UNIX)
            continue
        try:
            found.append(ipaddress.ip_network(part.strip()))  # strict: 10.0.0.1/8 is a typo, not a network
        except ValueError:
            also = " or unix" if unix else ""
            raise SettingsError(f"{name} must be comma-separated CIDRs{also}, got {part.strip()!r}") from None
    return tuple(found)


def parse_address(text: str) -> IPAddress | None:
    """An IP address (an IPv4-mapped IPv6 one as IPv4, zone id dropped), or None for anything else."""
    try:
        address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return mapped or address


def peer(scope: Mapping[str, Any]) -> str | None:
    """The address of an ASGI request's peer, as ``TrustedProxies`` takes it: None for a peer on a Unix socket (the
    server's own address is a path without a port, uvicorn's ``(path, None)``, or none at all in older uvicorn), ""
    for a TCP peer whose address could not be read (never trusted; found attacking it: a client that resets its
    connection before it is accepted, whose server address still reads as host and port)."""
    client = scope.get("client")
    if client:
        return str(client[0])
    server = scope.get("server")
    return None if server is None or server[1] is None else ""


class TrustedProxies:
    """Membership of a peer address in the configured networks, remembered per address."""

    def __init__(self, trusted: Iterable[IPNetwork | str]) -> None:
        listed = tuple(trusted)
        self.unix = UNIX in listed  # a peer without an address (the Unix socket's) is trusted
        self.networks = tuple(net for net in listed if not isinstance(net, str))
        self._known: dict[str, bool] = {}

    @property
    def any(self) -> bool:
        """Whether any peer is trusted at all (forward auth is off otherwise)."""
        return bool(self.networks) or self.unix

    def __contains__(self, host: object) -> bool:
        if host is None:
            return self.unix  # a peer on the Unix socket
        if not isinstance(host, str):
            return False
        known = self._known.get(host)
        if known is None:
            address = parse_address(host)  # None: a Unix socket path or a name, not an address we were told to trust
            known = address is not None and any(address in net for net in self.networks)
            if len(self._known) < _TRUST_CACHE:
                self._known[host] = known
        return known

    def client_address(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str:
        """The request's client address, as text: the peer's own unless the peer is trusted and says otherwise."""
        client = peer or ""
        if not self.any or peer not in self:
            return client  # an untrusted peer's X-Forwarded-For is the client's own claim: ignored
        hops: list[str] = []
        for name, value in headers:  # several header lines make one list, in order (RFC 9110 §5.3)
            if name == b"x-forwarded-for":
                hops.extend(value.decode("latin-1").split(","))
        for hop in reversed(hops[-_XFF_LIMIT:]):
            address = parse_address(hop)
            if address is None:
                break  # garbage a trusted proxy passed on: stay with the last address we can vouch for
            client = str(address)
            if client not in self:
                break
        return client
