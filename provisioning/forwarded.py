"""The address a request comes from, when reverse proxies stand in between.

Behind the TLS reverse proxy the README recommends, every connection comes from the proxy: rate
limits keyed on the connecting address then make one key of every client (the audit found 5
wrong passwords from anyone delaying every admin, 20 wrong codes blocking every enrollment).
``--trusted-proxy`` names the proxies (addresses or networks) whose forwarding header is
believed; no other peer's is, and by default none is.

Only one header is read, ``X-Forwarded-For`` (the default) or RFC 7239 ``Forwarded``: proxies
commonly append to the one they set and pass the other through untouched, which a client would
then write itself. The chain is read from the right (the hop nearest this server) leftwards
while the hops are trusted proxies; the first hop that is not one is the client, and what lies
left of it was written by the client and is ignored. A hop that is not an address there
(``unknown``, an obfuscated name, garbage) gives the nearest proxy's address: the request is
then keyed as it would be without the setting, never on text a client chose.

Pure functions and one small class, tested message-in/answer-out (tests/provisioning/
test_security.py).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence

from kitsys.ratelimit import address_key

from .errors import ConfigError

log = logging.getLogger("provisioning.http")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
HEADERS = ("x-forwarded-for", "forwarded")


def parse_network(text: str) -> Network:
    """``192.0.2.10``, ``10.0.0.0/8``, ``::1`` or ``fd00::/8`` (host bits must be zero)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ConfigError(f"trusted proxy {text!r} is not an address or network: {exc}") from None


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Every entry of ``values``, each one a comma-separated list."""
    return tuple(parse_network(part) for value in values for part in value.split(",") if part)


def parse_address(text: str) -> Address | None:
    """An address as proxies write it: ``192.0.2.7``, ``192.0.2.7:4711``, ``2001:db8::1``,
    ``[2001:db8::1]:4711``, ``fe80::1%eth0``; IPv4-mapped IPv6 as IPv4. None if it is not one."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    text = text.split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forwarded_hops(header: str, values: Sequence[str]) -> list[str]:
    """The client-side hops a forwarding header lists, leftmost first (several header lines
    are one list, in order). For ``Forwarded``, an element without ``for=`` is an empty hop."""
    joined = ",".join(values)
    if header == "x-forwarded-for":
        return [hop.strip() for hop in joined.split(",")]
    hops = []
    for element in joined.split(","):
        found = ""
        for pair in element.split(";"):
            name, _, value = pair.partition("=")
            if name.strip().lower() == "for":
                found = value.strip()
        hops.append(found)
    return hops


def client_address(
    peer: str | None, values: Sequence[str], trusted: Sequence[Network], header: str
) -> str:
    """The client's address for a connection from ``peer`` carrying ``values`` of ``header``."""
    nearest = parse_address(peer or "")
    if nearest is None:
        return peer or ""
    if not values or not _trusted(nearest, trusted):
        return str(nearest)
    for hop in reversed(forwarded_hops(header, values)):
        address = parse_address(hop)
        if address is None:
            return str(nearest)
        if not _trusted(address, trusted):
            return str(address)
        nearest = address
    return str(nearest)


def rate_key(address: str) -> str:
    """The key rate limits use for a client address (IPv6: its /64)."""
    parsed = parse_address(address)
    return address_key(parsed) if parsed is not None else address


def _trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)


class ClientAddresses:
    """The server's setting (``--trusted-proxy``, ``--forwarded-header``) and the one place
    that turns a connection into a client address. Warns once when a peer that looks like a
    local proxy sends the header without being trusted (every client then shares its address)."""

    def __init__(self, trusted: Iterable[str] = (), header: str = "x-forwarded-for") -> None:
        if header.lower() not in HEADERS:
            raise ConfigError(f"the forwarded header must be one of {', '.join(HEADERS)}")
        self.trusted = parse_networks(trusted)
        self.header = header.lower()
        self._warned = False

    def of(self, peer: str | None, values: Sequence[str]) -> str:
        address = client_address(peer, values, self.trusted, self.header)
        if values and not self._warned and address == str(parse_address(peer or "")):
            nearest = parse_address(peer or "")
            if nearest is not None and nearest.is_private and not _trusted(nearest, self.trusted):
                self._warned = True
                log.warning(
                    "requests from %s carry %s but it is not a trusted proxy: every client "
                    "behind it shares one address for rate limits (set --trusted-proxy)",
                    nearest,
                    self.header,
                )
        return address
