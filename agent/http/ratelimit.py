"""Join attempts per address: which address a ``POST /whep`` counts against.

One host of the school LAN sending a burst of offers filled a class for 30 s (issue 13). Each
address (an IPv6 /64, which one host can fill with addresses) gets ``webrtc.whep_burst``
attempts at once, then ``webrtc.whep_per_minute`` (a token bucket per address,
:class:`kitsys.ratelimit.TokenBuckets`); a pupil page retries at most every 2 s while refused
and every 5 s while the class is full, so a real pupil stays well within it. The kit itself
(loopback) is not limited.
"""

from __future__ import annotations

from kitsys.ratelimit import address_key, parse_ip


def peer_key(remote: str | None) -> str | None:
    """The address a limit applies to: an IPv4 address, or an IPv6 /64; None for the kit itself
    (loopback) or an address that cannot be read."""
    address = parse_ip(remote or "")
    if address is None or address.is_loopback:
        return None
    return address_key(address)
