"""Slowing down guessing and floods, keyed on client addresses (provisioning/forwarded.py) and
accounts. Pure logic with an injected clock; tests/provisioning/test_security.py drives them.

:class:`Backoff` replaces the hard lockouts the audit found (5 wrong passwords from anyone
refused the right one for 15 minutes, from everywhere): after a few free failures each further
one doubles the wait before the next try, up to a cap. :class:`LoginThrottle` keeps one backoff
per account, capped low (an admin whose e-mail is known waits seconds, not a quarter of an
hour), and one per client address, capped high (one attacker's guessing slows to a few tries an
hour). :class:`RateLimit` is a token bucket per key (the relay's WHEP offers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from kitsys.ratelimit import TokenBuckets

from .errors import TooManyRequests

Clock = Callable[[], float]
MAX_KEYS = 100_000
"""Beyond this many keys the oldest are dropped: memory stays bounded under a spray."""


def _too_many(message: str, wait_s: float) -> TooManyRequests:
    """429 with the wait in ``Retry-After`` and in the message (the admin UI shows it)."""
    seconds = max(1, math.ceil(wait_s))
    return TooManyRequests(f"{message}; try again in {seconds} s", retry_after_s=seconds)


class Backoff:
    """Growing delays per key: after ``free`` failures, the next try must wait ``base_s``, then
    twice as long after each further failure, at most ``cap_s``. A key with no failure for
    ``forget_s`` starts afresh. A refused try is not a failure (it was never checked)."""

    def __init__(
        self,
        free: int,
        base_s: float,
        cap_s: float,
        forget_s: float = 3600.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.free = free
        self.base_s = base_s
        self.cap_s = cap_s
        self.forget_s = forget_s
        self.clock = clock
        self._failures: dict[str, tuple[int, float]] = {}
        """key → (failures, time of the last one)."""

    def delay(self, failures: int) -> float:
        if failures < self.free:
            return 0.0
        return min(self.cap_s, self.base_s * 2.0 ** min(failures - self.free, 60))

    def wait(self, key: str) -> float:
        """Seconds before ``key`` may try again (0: now)."""
        entry = self._failures.get(key)
        if entry is None:
            return 0.0
        count, last = entry
        now = self.clock()
        if now - last >= self.forget_s:
            del self._failures[key]
            return 0.0
        return max(0.0, last + self.delay(count) - now)

    def check(self, *keys: str) -> None:
        wait = max((self.wait(key) for key in keys), default=0.0)
        if wait > 0:
            raise _too_many("too many failed attempts", wait)

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            count, last = self._failures.get(key, (0, now))
            count = 0 if now - last >= self.forget_s else count
            self._failures[key] = (count + 1, now)
        if len(self._failures) > MAX_KEYS:
            self._prune(now)

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)

    def _prune(self, now: float) -> None:
        kept = {k: v for k, v in self._failures.items() if now - v[1] < self.forget_s}
        if len(kept) > MAX_KEYS // 2:
            newest = sorted(kept.items(), key=lambda item: item[1][1])[-(MAX_KEYS // 2) :]
            kept = dict(newest)
        self._failures = kept


class LoginThrottle:
    """Password checks (sign-in, password change): a backoff per account and one per client
    address. A success clears the account's, not the address's: an attacker holding an
    account of their own cannot reset their address's delay by signing in between guesses."""

    def __init__(
        self,
        free: int = 5,
        account_cap_s: float = 30.0,
        address_cap_s: float = 900.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.account = Backoff(free, 1.0, account_cap_s, clock=clock)
        self.address = Backoff(free, 1.0, address_cap_s, clock=clock)

    def check(self, account: str, address: str) -> None:
        wait = max(self.account.wait(account), self.address.wait(address))
        if wait > 0:
            raise _too_many("too many failed attempts", wait)

    def failed(self, account: str, address: str) -> None:
        self.account.failed(account)
        self.address.failed(address)

    def succeeded(self, account: str) -> None:
        self.account.succeeded(account)


class RateLimit:
    """A token bucket per key (:class:`kitsys.ratelimit.TokenBuckets`, as the kit's join
    limit): ``burst`` requests at once, then ``rate_per_s`` a second; the rest get 429."""

    def __init__(self, burst: float, rate_per_s: float, clock: Clock = time.monotonic) -> None:
        self.burst = burst
        self.rate_per_s = rate_per_s
        self.clock = clock
        self._buckets = TokenBuckets(MAX_KEYS)
        self.refused = 0

    def take(self, key: str) -> None:
        """Spend one token of ``key``'s bucket, or raise 429 with the wait for the next one."""
        wait_s = self._buckets.take(key, self.clock(), self.burst, self.rate_per_s)
        if wait_s:
            self.refused += 1
            raise _too_many("too many requests", wait_s)
