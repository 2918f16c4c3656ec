"""kitsys/ratelimit.py: the token buckets the kit's and the server's limits share, clock
injected (no sleeping)."""

from __future__ import annotations

import pytest

from kitsys.ratelimit import TokenBuckets, address_key, parse_ip, retry_after


def wait(limiter: TokenBuckets, key: str, now: float, burst: float, per_minute: float) -> int:
    """The ``Retry-After`` a take would give (0: allowed)."""
    wait_s = limiter.take(key, now, burst, per_minute / 60.0)
    return retry_after(wait_s) if wait_s else 0


def test_burst_then_the_rate() -> None:
    limiter = TokenBuckets()
    assert [wait(limiter, "192.0.2.7", 0.0, 10, 20.0) for _ in range(10)] == [0] * 10
    assert wait(limiter, "192.0.2.7", 0.0, 10, 20.0) == 3  # 20 a minute: one every 3 s
    assert wait(limiter, "192.0.2.7", 1.0, 10, 20.0) == 2
    assert wait(limiter, "192.0.2.7", 3.0, 10, 20.0) == 0  # one token back after 3 s
    assert wait(limiter, "192.0.2.7", 3.0, 10, 20.0) == 3
    assert wait(limiter, "192.0.2.8", 3.0, 10, 20.0) == 0  # another address: its own bucket


def test_a_burst_of_200_admits_the_burst_only() -> None:
    limiter = TokenBuckets()
    admitted = sum(wait(limiter, "192.0.2.7", 0.001 * i, 10, 20.0) == 0 for i in range(200))
    assert admitted == 10


def test_refill_is_capped_at_the_burst() -> None:
    limiter = TokenBuckets()
    wait(limiter, "192.0.2.7", 0.0, 3, 60.0)
    after_an_hour = [wait(limiter, "192.0.2.7", 3600.0, 3, 60.0) for _ in range(4)]
    assert after_an_hour == [0, 0, 0, 1]


def test_clock_going_backwards_gives_nothing_back() -> None:
    limiter = TokenBuckets()
    for _ in range(2):
        wait(limiter, "192.0.2.7", 100.0, 2, 60.0)
    assert wait(limiter, "192.0.2.7", 50.0, 2, 60.0) == 1


def test_the_table_is_bounded_forgetting_refilled_addresses_first() -> None:
    limiter = TokenBuckets(max_keys=100)
    wait(limiter, "198.51.100.1", 0.0, 1, 1.0)  # drained: one a minute
    for i in range(500):
        wait(limiter, f"192.0.2.{i % 250}.{i}", 1000.0 + i * 100, 1, 1.0)
    assert len(limiter) <= 100
    limiter = TokenBuckets(max_keys=3)
    for address in ("a", "b", "c"):
        wait(limiter, address, 0.0, 1, 1.0)  # all drained
    wait(limiter, "d", 0.0, 1, 1.0)
    assert len(limiter) == 3
    assert wait(limiter, "c", 0.0, 1, 1.0) > 0  # the newest drained ones are kept


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("[2001:db8::1]", "2001:db8::/64"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_address_key(text: str, key: str) -> None:
    address = parse_ip(text)
    assert address is not None and address_key(address) == key


@pytest.mark.parametrize("text", ["", "unknown", "_hidden", "1.2.3.4:80", "999.1.1.1"])
def test_unparsable_addresses(text: str) -> None:
    assert parse_ip(text) is None
