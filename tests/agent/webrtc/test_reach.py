"""Which way out of the school works (agent/webrtc/reach.py): the decision, pure, then the
probes against a real coturn on loopback (tests/agent/webrtc/coturn.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiortc.rtcicetransport import connection_kwargs

from agent.config import IceServerConfig
from agent.webrtc.reach import (
    Endpoint,
    IceServerSet,
    NetworkMonitor,
    decide,
    endpoints,
    probe_all,
    probes,
)
from tests.agent.webrtc.coturn import LoopbackTurn
from tests.conftest import until

TURN = IceServerConfig(
    urls=[
        "turns:turn.example.fr:443?transport=tcp",
        "turn:turn.example.fr:443?transport=tcp",
        "turn:turn.example.fr:3478?transport=udp",
    ],
    username="1900000000:kit-1",
    credential="c2VjcmV0LWNyZWRlbnRpYWw=",
)
STUN = IceServerConfig(urls=["stun:stun.example.fr:3478"])
BINDING_STUN = ("stun", "stun.example.fr", 3478, "udp")
BINDING_TURN = ("stun", "turn.example.fr", 3478, "udp")
TURN_UDP = ("turn", "turn.example.fr", 3478, "udp")
TURN_TCP = ("turn", "turn.example.fr", 443, "tcp")
TURN_TLS = ("turn", "turn.example.fr", 443, "tls")


def outcomes(**by_name: str) -> dict[tuple[str, str, int, str], str]:
    keys = {
        "stun": BINDING_STUN,
        "turn_binding": BINDING_TURN,
        "udp": TURN_UDP,
        "tcp": TURN_TCP,
        "tls": TURN_TLS,
    }
    return {keys[name]: outcome for name, outcome in by_name.items()}


def first_urls(servers: tuple[IceServerConfig, ...]) -> tuple[str | None, str | None]:
    """The STUN and TURN URL aiortc will use (it takes only the first of each)."""
    from agent.webrtc.ice import rtc_configuration

    kwargs = connection_kwargs(rtc_configuration(servers).iceServers or [])
    stun = kwargs.get("stun_server")
    turn = kwargs.get("turn_server")
    turn_text = None
    if turn is not None:
        scheme = "turns" if kwargs["turn_ssl"] else "turn"
        turn_text = f"{scheme}:{turn[0]}:{turn[1]}/{kwargs['turn_transport']}"
    return (f"{stun[0]}:{stun[1]}" if stun else None), turn_text


def test_before_any_probe_turn_is_ordered_udp_tcp_tls() -> None:
    decision = decide(endpoints([TURN, STUN]), None)
    assert decision.reach == "unknown"
    assert [s.urls[0] for s in decision.servers] == [
        "stun:stun.example.fr:3478",
        "turn:turn.example.fr:3478?transport=udp",
        "turn:turn.example.fr:443?transport=tcp",
        "turns:turn.example.fr:443?transport=tcp",
    ]


def test_everything_open_prefers_udp() -> None:
    points = endpoints([TURN, STUN])
    decision = decide(points, outcomes(stun="", turn_binding="", udp="", tcp="", tls=""))
    assert decision.reach == "udp" and decision.turn_error == ""
    assert first_urls(decision.servers) == ("stun.example.fr:3478", "turn:turn.example.fr:3478/udp")


def test_udp_blocked_leaves_out_stun_and_turn_udp() -> None:
    """A school that lets out only TCP 80/443: aiortc gets TURN over TCP first, no STUN at all
    (its binding would time out on every join)."""
    points = endpoints([TURN, STUN])
    result = outcomes(stun="timeout", turn_binding="timeout", udp="timeout", tcp="", tls="")
    decision = decide(points, result)
    assert decision.reach == "turn-tcp"
    assert first_urls(decision.servers) == (None, "turn:turn.example.fr:443/tcp")
    assert all("udp" not in s.urls[0] and "stun:" not in s.urls[0] for s in decision.servers)


def test_only_tls_gets_out() -> None:
    result = outcomes(stun="timeout", turn_binding="timeout", udp="timeout", tcp="refused", tls="")
    decision = decide(endpoints([TURN, STUN]), result)
    assert decision.reach == "turn-tls"
    assert first_urls(decision.servers) == (None, "turns:turn.example.fr:443/tcp")


def test_nothing_gets_out() -> None:
    result = outcomes(
        stun="timeout", turn_binding="timeout", udp="timeout", tcp="refused", tls="TLS (x)"
    )
    decision = decide(endpoints([TURN, STUN]), result)
    assert decision.reach == "none" and decision.servers == ()
    assert decision.turn_error == "udp: timeout; tcp: refused; tls: TLS (x)"


def test_bad_credential_with_udp_open() -> None:
    bad = "bad credential (401)"
    result = outcomes(stun="", turn_binding="", udp=bad, tcp=bad, tls=bad)
    decision = decide(endpoints([TURN, STUN]), result)
    assert decision.reach == "udp" and "bad credential (401)" in decision.turn_error
    assert first_urls(decision.servers) == ("stun.example.fr:3478", None)


def test_no_turn_and_udp_blocked_is_none() -> None:
    decision = decide(endpoints([STUN]), outcomes(stun="timeout"))
    assert decision.reach == "none" and decision.turn_error == "" and decision.servers == ()


def test_turn_server_answers_bindings_when_no_stun_is_configured() -> None:
    """coturn answers STUN bindings: with UDP open, the kit gathers server-reflexive candidates
    from its TURN server too (direct paths, no relay bandwidth)."""
    decision = decide(endpoints([TURN]), outcomes(turn_binding="", udp="", tcp="", tls=""))
    assert first_urls(decision.servers) == ("turn.example.fr:3478", "turn:turn.example.fr:3478/udp")


def test_nothing_configured_is_unknown() -> None:
    decision = decide([], {})
    assert decision.reach == "unknown" and decision.servers == ()


def test_probes_are_one_per_thing_tested() -> None:
    points = endpoints([TURN, STUN, TURN])
    assert sorted(p.key for p in probes(points)) == sorted(
        [BINDING_STUN, BINDING_TURN, TURN_UDP, TURN_TCP, TURN_TLS]
    )


def test_unusable_urls_are_left_out_with_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    odd = IceServerConfig(urls=["turn:x.example.fr:3478?transport=sctp", "turns:y:5349", "stun:"])
    with caplog.at_level(logging.WARNING, "agent.network"):
        points = endpoints([odd])
    assert [p.key for p in points] == [("turn", "y", 5349, "tls")]
    assert "x.example.fr:3478" in caplog.text


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_server_servers_replace_the_previous_and_the_configured_until_they_expire() -> None:
    clock = Clock()
    changes: list[int] = []
    servers = IceServerSet([STUN], clock=clock, wall=lambda: 1.7e9)
    servers.on_change = lambda: changes.append(servers.generation)
    assert [p.host for p in servers.endpoints()] == ["stun.example.fr"]
    servers.set_given([TURN], valid_for_s=600)
    assert [p.kind for p in servers.endpoints()] == ["turn"] * 3
    other = IceServerConfig(urls=["turn:other.example.fr:3478"], username="u", credential="p")
    servers.set_given([other], valid_for_s=600)
    assert [p.host for p in servers.endpoints()] == ["other.example.fr"]
    servers.set_given([other], valid_for_s=900)  # the same servers, renewed: no new probe
    assert changes == [1, 2]
    assert servers.expires_in() == 900
    clock.now += 899
    assert len(servers.endpoints()) == 1
    clock.now += 1
    assert [p.host for p in servers.endpoints()] == ["stun.example.fr"]
    assert changes == [1, 2, 3] and servers.expires_in() is None
    servers.set_given([TURN], valid_for_s=-5)  # already expired when it arrived
    assert [p.host for p in servers.endpoints()] == ["stun.example.fr"]


def test_a_probe_of_older_servers_is_not_recorded() -> None:
    servers = IceServerSet([STUN])
    generation = servers.generation
    servers.set_given([TURN], 600)
    assert servers.record(generation, outcomes(stun="")) == []
    assert servers.decision().reach == "unknown"


def test_failures_are_logged_once_per_change_without_credentials() -> None:
    servers = IceServerSet([TURN])
    servers.set_given([], 0)
    bad = outcomes(turn_binding="", udp="bad credential (401)", tcp="timeout", tls="timeout")
    first = servers.record(servers.generation, bad)
    assert len(first) == 3 and any("over udp: failed (bad credential (401))" in x for x in first)
    assert servers.record(servers.generation, bad) == []  # the same: not again
    fixed = outcomes(turn_binding="", udp="", tcp="timeout", tls="timeout")
    assert servers.record(servers.generation, fixed) == [
        "TURN allocation to turn.example.fr:3478 over udp: works"
    ]
    assert all(TURN.credential not in line and TURN.username not in line for line in first)
    point = servers.endpoints()[0]
    assert TURN.credential not in repr(point) and TURN.username not in repr(point)
    health = servers.health({"relay/udp": 2})
    assert health.reach == "udp" and health.paths == {"relay/udp": 2} and health.probed_at > 0


async def test_monitor_probes_at_start_on_change_and_after_expiry() -> None:
    servers = IceServerSet([STUN])
    tested: list[str] = []

    async def prober(point: Endpoint) -> None:
        tested.append(point.host)
        if point.kind == "turn":
            raise TimeoutError

    monitor = NetworkMonitor(servers, interval_s=3600, timeout_s=1, prober=prober)
    task = asyncio.create_task(monitor.run())
    try:
        await _until(lambda: monitor.probes == 1)
        assert servers.decision().reach == "udp"
        servers.set_given([TURN], 0.5)
        await _until(lambda: monitor.probes == 2)
        assert servers.decision().turn_error == "udp: timeout; tcp: timeout; tls: timeout"
        assert "turn.example.fr" in tested
        tested.clear()
        await _until(lambda: monitor.probes == 3)  # by itself, at the expiry
        assert servers.expires_in() is None and servers.decision().turn_error == ""
        assert tested == ["stun.example.fr"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- joins during a probe (issue 12: a school without UDP, a pupil joining at class start) ------

ALL = {BINDING_STUN, BINDING_TURN, TURN_UDP, TURN_TCP, TURN_TLS}


def test_a_tcp_allocation_settles_while_udp_is_still_unanswered() -> None:
    """TURN over TCP answered after 3+ round trips, UDP not once: UDP is presumed dropped and
    the decision is TURN over TCP at once, not after the UDP probes' timeout."""
    points = endpoints([TURN, STUN])
    decision = decide(points, outcomes(tcp=""), pending=ALL - {TURN_TCP})
    assert decision.settled and decision.reach == "turn-tcp"
    assert first_urls(decision.servers) == (None, "turn:turn.example.fr:443/tcp")


def test_pending_probes_hold_the_decision_until_the_first_turn_url_is_known() -> None:
    points = endpoints([TURN, STUN])
    nothing = decide(points, {}, pending=ALL)
    assert not nothing.settled and nothing.reach == "unknown" and nothing.servers == ()
    # UDP answers: TURN over UDP (aiortc's first TURN URL) may work, wait for it...
    udp = decide(points, outcomes(stun="", turn_binding=""), pending={TURN_UDP, TURN_TCP, TURN_TLS})
    assert not udp.settled
    assert first_urls(udp.servers) == ("stun.example.fr:3478", None)
    # ...but not for TCP and TLS, which come after it.
    done = decide(points, outcomes(stun="", turn_binding="", udp=""), pending={TURN_TCP, TURN_TLS})
    assert done.settled and done.reach == "udp"
    assert first_urls(done.servers) == ("stun.example.fr:3478", "turn:turn.example.fr:3478/udp")
    # TLS alone answered: TCP may still answer (it comes first), so not settled yet.
    tls = decide(points, outcomes(tls=""), pending=ALL - {TURN_TLS})
    assert not tls.settled and first_urls(tls.servers) == (None, "turns:turn.example.fr:443/tcp")


def test_a_renewal_keeps_what_gets_out_and_forgets_credential_failures() -> None:
    """The server renews the kit's credentials at each class start: same URLs, new
    username/password. What gets out of the school is still known; a join does not wait."""
    servers = IceServerSet([])
    servers.attach(lambda: None)
    servers.set_given([TURN], 600)
    assert not servers.decision().settled  # new servers: pending until probed
    blocked = outcomes(turn_binding="timeout", udp="timeout", tcp="", tls="bad credential (401)")
    servers.record(servers.generation, blocked)
    renewed = TURN.model_copy(update={"username": "1900003600:class-2", "credential": "bmV3"})
    servers.set_given([renewed], 600)
    decision = servers.decision()
    assert decision.settled and decision.reach == "turn-tcp"
    assert decision.servers[0].username == "1900003600:class-2"
    assert decision.servers[0].credential == "bmV3"
    assert [s.urls[0] for s in decision.servers] == ["turn:turn.example.fr:443?transport=tcp"]
    assert servers._pending == {TURN_TLS}  # the 401 depended on the old credential
    other = IceServerConfig(urls=["turn:other.example.fr:3478"], username="u", credential="p")
    servers.set_given([other], 600)  # another server: nothing known about it
    assert not servers.decision().settled


async def test_without_a_monitor_a_join_does_not_wait() -> None:
    servers = IceServerSet([TURN, STUN])
    assert await servers.wait_settled(5) < 0.1
    assert servers.decision().reach == "unknown" and len(servers.decision().servers) == 4


async def test_a_join_during_the_first_probe_waits_only_for_the_tcp_answer() -> None:
    """UDP dropped (its probes would time out after 2 s), TCP answers after 50 ms: a join
    made during the probe waits ~50 ms and gets TURN over TCP, no STUN, no TURN over UDP."""
    servers = IceServerSet([])

    async def prober(point: Endpoint) -> None:
        if point.transport == "udp":
            await asyncio.sleep(10)
        await asyncio.sleep(0.05)

    monitor = NetworkMonitor(servers, interval_s=3600, timeout_s=2, prober=prober)
    task = asyncio.create_task(monitor.run())
    try:
        servers.set_given([TURN, STUN], 600)
        waited = await servers.wait_settled(3)
        assert waited < 0.5, waited
        assert first_urls(servers.decision().servers) == (None, "turn:turn.example.fr:443/tcp")
        assert servers.decision().reach == "turn-tcp" and monitor.probes == 0
        await _until(lambda: monitor.probes == 1)  # the UDP timeouts confirm it
        assert servers.decision().reach == "turn-tcp"
        assert servers.decision().turn_error == ""
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_change_during_a_probe_starts_the_new_probe_at_once() -> None:
    """The probe of servers no longer used is cancelled, not waited for (it delayed the first
    usable decision by 6 s at a class start)."""
    servers = IceServerSet([STUN])
    started: list[tuple[str, float]] = []

    async def prober(point: Endpoint) -> None:
        started.append((point.host, time.monotonic()))
        await asyncio.sleep(10)  # dropped: times out

    monitor = NetworkMonitor(servers, interval_s=3600, timeout_s=2, prober=prober)
    task = asyncio.create_task(monitor.run())
    try:
        await _until(lambda: len(started) == 1)
        changed = time.monotonic()
        servers.set_given([TURN], 600)
        await _until(lambda: any(host == "turn.example.fr" for host, _ in started))
        first_new = min(at for host, at in started if host == "turn.example.fr")
        assert first_new - changed < 0.5
        await _until(lambda: monitor.probes == 1, timeout=5)
        assert servers.decision().reach == "none"
        assert servers.decision().turn_error == "udp: timeout; tcp: timeout; tls: timeout"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _until(condition: Any, timeout: float = 5.0) -> None:
    await until(condition, timeout)


# -- against a real coturn --------------------------------------------------------------------


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A UDP and TCP port that take packets and never answer (a firewall that drops)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", 0))
        port = udp.getsockname()[1]
        tcp.bind(("127.0.0.1", port))
        tcp.listen()
        yield port


def _turn(coturn: LoopbackTurn, *transports: str, bad: bool = False) -> IceServerConfig:
    username, credential = coturn.credentials()
    if bad:
        credential = "bm90LXRoZS1yaWdodC1vbmU="
    return IceServerConfig(
        urls=[coturn.urls()[t] for t in transports], username=username, credential=credential
    )


async def test_real_coturn_every_transport_works(
    coturn: LoopbackTurn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(coturn.certificate))  # trust its certificate
    points = endpoints([_turn(coturn, "udp", "tcp", "tls")])
    result = await probe_all(points, timeout_s=3)
    assert set(result.values()) == {""}, result
    decision = decide(points, result)
    assert decision.reach == "udp"
    assert first_urls(decision.servers) == (
        f"127.0.0.1:{coturn.port}",
        f"turn:127.0.0.1:{coturn.port}/udp",
    )


async def test_real_coturn_refuses_a_bad_credential_and_an_untrusted_certificate(
    coturn: LoopbackTurn,
) -> None:
    points = endpoints([_turn(coturn, "udp", "tcp", bad=True), _turn(coturn, "tls")])
    result = await probe_all(points, timeout_s=3)
    by_transport = {key[3]: why for key, why in result.items() if key[0] == "turn"}
    assert by_transport["udp"] == by_transport["tcp"] == "bad credential (401)"
    assert by_transport["tls"] == "TLS (self-signed certificate)"


async def test_blocked_and_closed_ports_fail_within_the_timeout(blackhole: int) -> None:
    """Dropped packets time out, a closed port is refused; all probes run at once, so the
    whole check costs one timeout, not one per server."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    servers = [
        IceServerConfig(
            urls=[f"turn:127.0.0.1:{blackhole}?transport=udp"], username="u", credential="p"
        ),
        IceServerConfig(
            urls=[f"turn:127.0.0.1:{blackhole}?transport=tcp"], username="u", credential="p"
        ),
        IceServerConfig(
            urls=[f"turn:127.0.0.1:{closed_port}?transport=tcp"], username="u", credential="p"
        ),
        IceServerConfig(urls=[f"stun:127.0.0.1:{closed_port}"]),
    ]
    started = time.monotonic()
    result = await probe_all(endpoints(servers), timeout_s=1.0)
    assert time.monotonic() - started < 1.8
    assert result[("turn", "127.0.0.1", blackhole, "udp")] == "timeout"
    assert result[("turn", "127.0.0.1", blackhole, "tcp")] == "timeout"
    assert result[("turn", "127.0.0.1", closed_port, "tcp")] == "refused"
    assert result[("stun", "127.0.0.1", closed_port, "udp")] == "refused"
    assert decide(endpoints(servers), result).reach == "none"
