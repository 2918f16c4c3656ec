"""The machine's own network address, as the kit (join links) and the demo server print it."""

from __future__ import annotations

import socket

ROUTE_PROBE = ("192.0.2.1", 9)
"""TEST-NET-1 (RFC 5737): only looked up in the routing table, never sent to."""


def lan_address() -> str:
    """The IPv4 address other machines on the LAN reach us on: the source address of the
    default route (a UDP ``connect`` only consults the routing table; no packet is sent), or
    ``127.0.0.1`` when there is no route at all."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(ROUTE_PROBE)
            return str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
