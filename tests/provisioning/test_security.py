"""The server's side of the outside audit (issue 13): client addresses behind trusted proxies,
growing sign-in delays instead of lockouts, enrollment and relay limits per client, the pupil
page's security headers, failed sign-ins as attempts in the audit, private SQLite files.

The live tests put a "reverse proxy" on loopback: the test client connects from 127.0.0.1
(trusted) and names the client in ``X-Forwarded-For``, so two clients at two addresses are two
requests with two headers. Clocks are injected; nothing sleeps."""

from __future__ import annotations

import io
import ipaddress
import os
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.http.app import PAGE_CSP
from provisioning import cli, store
from provisioning.app import PUPIL_CSP
from provisioning.db import database_url, open_database
from provisioning.errors import ConfigError, TooManyRequests
from provisioning.forwarded import ClientAddresses, client_address, parse_networks, rate_key
from provisioning.limits import Backoff, LoginThrottle, RateLimit
from tests.fuzz import bounded

from .conftest import ADMIN_PASSWORD, LiveServer, server_options, serving

ATTACKER, ADMIN, PUPIL = "198.51.100.7", "203.0.113.9", "192.0.2.44"
PROXY = parse_networks(["127.0.0.1", "10.0.0.0/8", "::1"])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the client address ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peer", "values", "header", "expected"),
    [
        (ATTACKER, [f"{ADMIN}"], "x-forwarded-for", ATTACKER),  # an untrusted peer's header
        ("127.0.0.1", [], "x-forwarded-for", "127.0.0.1"),  # a local tool, no header
        ("127.0.0.1", [PUPIL], "x-forwarded-for", PUPIL),
        ("127.0.0.1", [f"{ADMIN}, {PUPIL}"], "x-forwarded-for", PUPIL),  # spoofed left part
        ("127.0.0.1", [f"{PUPIL}, 10.1.2.3"], "x-forwarded-for", PUPIL),  # two trusted hops
        ("127.0.0.1", [ADMIN, f"{PUPIL}, 10.1.2.3"], "x-forwarded-for", PUPIL),  # two lines
        ("127.0.0.1", ["10.9.9.9, 10.1.2.3"], "x-forwarded-for", "10.9.9.9"),  # all trusted
        ("127.0.0.1", ["unknown"], "x-forwarded-for", "127.0.0.1"),  # never client text
        ("127.0.0.1", [f"{PUPIL}, garbage"], "x-forwarded-for", "127.0.0.1"),
        ("127.0.0.1", [f"{PUPIL}:4711"], "x-forwarded-for", PUPIL),
        ("127.0.0.1", ["[2001:db8::7]:4711"], "x-forwarded-for", "2001:db8::7"),
        ("::ffff:127.0.0.1", ["::ffff:192.0.2.44"], "x-forwarded-for", PUPIL),
        ("127.0.0.1", [f"for={ADMIN}"], "x-forwarded-for", "127.0.0.1"),
        ("127.0.0.1", [f"for={ADMIN};proto=https, for={PUPIL}"], "forwarded", PUPIL),
        (
            "127.0.0.1",
            ['for="[2001:db8:cafe::17]:4711";by=10.0.0.1'],
            "forwarded",
            "2001:db8:cafe::17",
        ),
        ("127.0.0.1", [f"For={PUPIL}, for=10.0.0.3;proto=http"], "forwarded", PUPIL),
        ("127.0.0.1", ["proto=https"], "forwarded", "127.0.0.1"),  # no for=
        ("127.0.0.1", ["for=_hidden"], "forwarded", "127.0.0.1"),
        (None, [PUPIL], "x-forwarded-for", ""),
    ],
)
def test_client_address(peer: str | None, values: list[str], header: str, expected: str) -> None:
    assert client_address(peer, values, PROXY, header) == expected


HOP = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["unknown", "_hidden", '"[::1]:80"', "for=", ";", "[", "1.2.3.4:", ""]),
    st.text(max_size=30),
)


@given(
    hops=st.lists(HOP, max_size=12),
    separator=st.sampled_from([", ", ",", ";for=", ", for="]),
    header=st.sampled_from(["x-forwarded-for", "forwarded"]),
    peer=st.one_of(st.just("127.0.0.1"), st.just("10.1.1.1"), st.just(ATTACKER), HOP),
)
def test_any_forwarded_header_gives_an_address_of_the_chain(
    hops: list[str], separator: str, header: str, peer: str
) -> None:
    """Whatever a client writes: no exception, bounded time and memory, and the answer is the
    peer or an address that parses (never raw client text). Examples: the tests/fuzz.py
    profile (``make fuzz`` runs more)."""
    value = separator.join(hops)
    with bounded(seconds=0.5, megabytes=4):
        found = client_address(peer, [value], PROXY, header)
    assert found == peer or ipaddress.ip_address(found) is not None
    rate_key(found)  # and keys it without error


def test_by_default_no_proxy_is_believed() -> None:
    assert client_address("127.0.0.1", [PUPIL], (), "x-forwarded-for") == "127.0.0.1"


def test_bad_trusted_proxies_and_headers_are_refused() -> None:
    for bad in ("10.0.0.1/8", "proxy.example.fr", "300.1.1.1"):
        with pytest.raises(ConfigError, match="trusted proxy"):
            ClientAddresses([bad])
    with pytest.raises(ConfigError, match="forwarded header"):
        ClientAddresses(["127.0.0.1"], "x-real-ip")
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["serve", "--trusted-proxy", "not-an-address"])
    args = cli._parser().parse_args(
        ["serve", "--trusted-proxy", "10.0.0.0/8,::1", "--trusted-proxy", "127.0.0.1"]
    )
    assert args.trusted_proxy == [("10.0.0.0/8", "::1/128"), ("127.0.0.1/32",)]
    assert args.forwarded_header == "x-forwarded-for"


def test_ipv6_clients_are_keyed_by_their_slash_64() -> None:
    assert (
        rate_key("2001:db8:1:2:aaaa::1")
        == rate_key("2001:db8:1:2:bbbb::9")
        == ("2001:db8:1:2::/64")
    )
    assert rate_key("2001:db8:1:3::1") != rate_key("2001:db8:1:2::1")
    assert rate_key(PUPIL) == PUPIL


# -- delays and buckets (pure) --------------------------------------------------------------------


def test_delays_grow_per_address_and_stay_short_per_account() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(free=5, account_cap_s=30.0, address_cap_s=900.0, clock=clock)
    for _ in range(5):
        throttle.check("root@example.fr", ATTACKER)
        throttle.failed("root@example.fr", ATTACKER)
    with pytest.raises(TooManyRequests) as refused:
        throttle.check("root@example.fr", ATTACKER)
    assert refused.value.headers["Retry-After"] == "1"
    assert refused.value.public_message.endswith("try again in 1 s")  # shown by the admin UI
    # The attacker keeps guessing as fast as allowed: the address's wait doubles up to 15 min,
    # the account's stops at 30 s.
    waits = []
    for _ in range(12):
        clock.now += max(throttle.account.wait("root@example.fr"), throttle.address.wait(ATTACKER))
        throttle.check("root@example.fr", ATTACKER)
        throttle.failed("root@example.fr", ATTACKER)
        waits.append(throttle.address.wait(ATTACKER))
    assert waits[:4] == [2.0, 4.0, 8.0, 16.0] and waits[-1] == 900.0
    assert throttle.account.wait("root@example.fr") == 30.0
    # The real admin, from elsewhere: at most 30 s, never a quarter of an hour.
    with pytest.raises(TooManyRequests) as refused:
        throttle.check("root@example.fr", ADMIN)
    assert int(refused.value.headers["Retry-After"]) <= 30
    clock.now += 30
    throttle.check("root@example.fr", ADMIN)
    throttle.succeeded("root@example.fr")
    # Signing in clears the account's delay, not the attacker's address.
    assert throttle.account.wait("root@example.fr") == 0.0
    with pytest.raises(TooManyRequests):
        throttle.check("other@example.fr", ATTACKER)
    clock.now += 3600  # an hour without failures: forgotten
    throttle.check("other@example.fr", ATTACKER)


def test_backoff_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("provisioning.limits.MAX_KEYS", 100)
    clock = FakeClock()
    backoff = Backoff(free=1, base_s=1.0, cap_s=10.0, clock=clock)
    for i in range(1000):
        clock.now += 0.001
        backoff.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(backoff._failures) <= 100
    assert backoff.wait("10.0.3.231") > 0  # the newest are kept


def test_token_bucket() -> None:
    clock = FakeClock()
    bucket = RateLimit(burst=3, rate_per_s=0.5, clock=clock)
    for _ in range(3):
        bucket.take(PUPIL)
    with pytest.raises(TooManyRequests) as refused:
        bucket.take(PUPIL)
    assert refused.value.headers["Retry-After"] == "2" and bucket.refused == 1
    bucket.take(ADMIN)  # another address has its own bucket
    clock.now += 2.0
    bucket.take(PUPIL)
    with pytest.raises(TooManyRequests):
        bucket.take(PUPIL)
    clock.now += 100.0  # refills to the burst, not beyond
    for _ in range(3):
        bucket.take(PUPIL)
    with pytest.raises(TooManyRequests):
        bucket.take(PUPIL)


# -- against a live server behind a "proxy" on loopback -------------------------------------------


@pytest.fixture
async def proxied(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[LiveServer]:
    changes: dict[str, Any] = {"trusted_proxies": ("127.0.0.1",)}
    changes.update(getattr(request, "param", {}))
    async with serving(server_options(tmp_path, "", **changes)) as live:
        yield live


async def login(live: LiveServer, email: str, password: str, client: str) -> tuple[int, str]:
    async with live.http.post(
        live.url + "/api/v1/login",
        json={"email": email, "password": password},
        headers={"X-Forwarded-For": client},
    ) as response:
        return response.status, response.headers.get("Retry-After", "")


async def test_wrong_passwords_from_one_address_do_not_lock_the_admin_out(
    proxied: LiveServer,
) -> None:
    """Before: 5 wrong passwords from anyone → the right one refused for 15 min, from anywhere
    (and behind a proxy everyone was one address)."""
    clock = FakeClock()
    proxied.server.login_limiter = LoginThrottle(clock=clock)
    root = "root@example.fr"
    await proxied.admin(root)  # signed in from loopback, no header
    statuses = [(await login(proxied, root, "wrong password", ATTACKER))[0] for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    status, retry = await login(proxied, root, ADMIN_PASSWORD, ADMIN)
    assert status == 429 and int(retry) <= 1, "the account waits a second, not 15 minutes"
    clock.now += int(retry)
    assert (await login(proxied, root, ADMIN_PASSWORD, ADMIN))[0] == 200
    # The guessing address is still slowed, more after each failure.
    assert (await login(proxied, root, "wrong again", ATTACKER))[0] == 401
    assert await login(proxied, root, "and again", ATTACKER) == (429, "2")
    # The e-mail an attacker types is recorded as an attempt, never as the actor.
    await login(proxied, "victim@example.fr", "x" * 12, PUPIL)
    entries = await store.list_audit(proxied.server.engine, 100)
    failed = [e for e in entries if e["action"] == "login.failed"]
    assert failed and {e["actor"] for e in failed} == {"anonymous"}
    assert {"email": "victim@example.fr", "ip": PUPIL} in [e["detail"] for e in failed]
    assert {e["actor"] for e in entries if e["action"] == "login"} == {root}
    assert await store.list_audit(proxied.server.engine, 100, "victim@example.fr") == []


@pytest.mark.parametrize("proxied", [{"trusted_proxies": ()}], indirect=True)
async def test_without_the_setting_forwarded_headers_are_not_believed(
    proxied: LiveServer,
) -> None:
    """A client cannot escape its delay by writing a new X-Forwarded-For each time."""
    root = "root@example.fr"
    await proxied.admin(root)
    statuses = [(await login(proxied, root, "wrong password", f"192.0.2.{i}"))[0] for i in range(6)]
    assert statuses == [401] * 5 + [429]


async def test_enrollment_guessing_is_keyed_on_the_client(proxied: LiveServer) -> None:
    """Before: behind the proxy, 20 wrong codes from anyone blocked every enrollment."""
    await proxied.school("0751234A")
    good = await proxied.code("0751234A")

    async def enroll(code: str, client: str) -> int:
        async with proxied.http.post(
            proxied.url + "/api/v1/enroll",
            json={"code": code},
            headers={"X-Forwarded-For": client},
        ) as response:
            return response.status

    statuses = [await enroll("AAAA-BBBB-CCCC-DDDD", ATTACKER) for _ in range(21)]
    assert statuses == [403] * 20 + [429]
    assert await enroll(good, ADMIN) == 201


@pytest.mark.parametrize("proxied", [{"whep_burst": 3, "whep_rate_per_s": 0.01}], indirect=True)
async def test_relay_offers_are_rate_limited_per_pupil_address(proxied: LiveServer) -> None:
    """Before: 200 offers in a burst from one client all reached the kit and filled the class."""

    async def offer(client: str) -> aiohttp.ClientResponse:
        async with proxied.http.post(
            proxied.url + "/whep/some-token",
            data=b"v=0\r\n",
            headers={"Content-Type": "application/sdp", "X-Forwarded-For": client},
        ) as response:
            await response.read()
            return response

    assert [(await offer(ATTACKER)).status for _ in range(3)] == [404] * 3
    refused = await offer(ATTACKER)
    assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["Access-Control-Allow-Origin"] == "*"
    assert "Retry-After" in refused.headers["Access-Control-Expose-Headers"]
    assert (await offer(PUPIL)).status == 404, "another pupil is not limited"
    async with proxied.http.get(proxied.url + "/metrics") as response:
        assert "provisioning_relay_offers_limited_total 1\n" in await response.text()
    # /metrics is for loopback: a client forwarded by the local proxy is not loopback.
    async with proxied.http.get(
        proxied.url + "/metrics", headers={"X-Forwarded-For": PUPIL}
    ) as response:
        assert response.status == 403


async def test_pupil_page_and_files_cannot_be_framed_or_sniffed(proxied: LiveServer) -> None:
    assert PUPIL_CSP == PAGE_CSP, "the relay serves the agent's page with the agent's policy"
    for path, status in (
        ("/join/some-token", 200),
        ("/static/join.js", 200),
        ("/static/join.css", 200),
    ):
        async with proxied.http.get(proxied.url + path) as response:
            assert response.status == status, path
            headers = response.headers
            assert headers["Content-Security-Policy"] == PAGE_CSP, path
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
            assert headers["X-Content-Type-Options"] == "nosniff", path
            assert headers["Referrer-Policy"] == "no-referrer", path


# -- SQLite files ----------------------------------------------------------------------------------


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A hand-run server under the usual umask 022."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("loose_umask")
async def test_sqlite_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    engine = await open_database(database_url("", data))
    try:
        await store.add_school(engine, "0751234A", "École", "75")  # the WAL is written
        files = sorted(data.iterdir())
        assert {p.name for p in files} >= {"provisioning.sqlite3", "provisioning.sqlite3-wal"}
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("loose_umask")
async def test_an_old_world_readable_database_is_tightened(tmp_path: Path) -> None:
    database = tmp_path / "provisioning.sqlite3"
    engine = await open_database(database_url("", tmp_path))
    await engine.dispose()
    database.chmod(0o644)
    engine = await open_database(database_url("", tmp_path))
    await engine.dispose()
    assert mode(database) == 0o600


@pytest.mark.usefixtures("loose_umask")
def test_admin_commands_create_a_private_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make demo`` prepares its server with these commands before ``serve``."""
    old, sys.stdin = sys.stdin, io.StringIO("long enough password\n")
    try:
        code = cli.main(
            ["user", "add", "a@b.fr", "--role", "national", "--data-dir", str(tmp_path)]
        )
    finally:
        sys.stdin = old
    assert code == 0, capsys.readouterr()
    assert mode(tmp_path / "provisioning.sqlite3") == 0o600
