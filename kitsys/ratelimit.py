"""Limits per client address, shared by the kit and the server: the key an address is counted
under, and a token bucket per key. Pure: the time is an argument.

One host can hold a whole IPv6 /64 (privacy addresses), so an IPv6 address counts as its /64;
an IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack socket reports) counts as
the IPv4 address it carries.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_KEYS = 4096
"""Keys remembered at most (a few hundred bytes each); beyond, refilled ones go first, then
the oldest."""


def parse_ip(text: str) -> Address | None:
    """An address as a socket or a forwarding header gives it (``fe80::1%eth0``,
    ``[2001:db8::1]``, ``::ffff:192.0.2.1``), or None."""
    try:
        address = ipaddress.ip_address(text.strip().strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_key(address: Address) -> str:
    """What a limit counts: the IPv4 address, or the IPv6 address's /64."""
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    """A token bucket per key: ``burst`` at once, then ``rate_per_s``. :meth:`take` is the only
    operation; the table is bounded (:data:`MAX_KEYS`)."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._max = max_keys

    def take(self, key: str, now: float, burst: float, rate_per_s: float) -> float:
        """Spend one token of ``key`` at ``now`` (seconds, monotonic): 0 if there was one, else
        the seconds until there will be (never 0)."""
        bucket = self._buckets.pop(key, None)  # re-inserted last: the dict is oldest-first
        if bucket is None:
            bucket = _Bucket(float(burst), now)
        else:
            elapsed = max(0.0, now - bucket.stamp)  # a clock going back refills nothing
            bucket.tokens = min(float(burst), bucket.tokens + elapsed * rate_per_s)
            bucket.stamp = now
        self._buckets[key] = bucket
        self._bound(now, burst, rate_per_s)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return max(1e-3, (1.0 - bucket.tokens) / rate_per_s)

    def __len__(self) -> int:
        return len(self._buckets)

    def _bound(self, now: float, burst: float, rate_per_s: float) -> None:
        if len(self._buckets) <= self._max:
            return
        full = [
            key
            for key, b in self._buckets.items()
            if b.tokens + (now - b.stamp) * rate_per_s >= burst
        ]
        for key in full[: len(self._buckets) - self._max]:
            del self._buckets[key]
        while len(self._buckets) > self._max:
            del self._buckets[next(iter(self._buckets))]


def retry_after(wait_s: float) -> int:
    """``Retry-After`` for a wait: whole seconds, at least 1."""
    return max(1, math.ceil(wait_s - 1e-9))
