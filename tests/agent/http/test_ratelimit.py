"""agent/http/ratelimit.py: which address a join attempt counts against."""

from __future__ import annotations

import pytest

from agent.http.ratelimit import peer_key


@pytest.mark.parametrize(
    ("remote", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),  # one host, many addresses: one key
        ("fe80::1%eth0", "fe80::/64"),
        ("127.0.0.1", None),  # the kit itself
        ("::1", None),
        ("::ffff:127.0.0.1", None),
        ("", None),
        (None, None),
        ("not an address", None),
    ],
)
def test_peer_key(remote: str | None, key: str | None) -> None:
    assert peer_key(remote) == key
