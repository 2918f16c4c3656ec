"""Credentials minted by provisioning/turn.py against a real coturn, configured from the install
script's template (systemd/turnserver.conf.in), across real NATs (tests/nat.py).

A kit behind a school NAT and a pupil behind a home NAT each allocate a relay with aioice's TURN
client (tests/turn_peer.py, run inside their namespaces) and exchange datagrams through them;
coturn sees them from their routers' public addresses. Expired and wrongly signed credentials get
401; a relay towards the server's own LAN gets 403 (``denied-peer-ip``), and reaches it once those
lines are taken out of the template, so that test can fail.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioning.ice import IceIssuer, TurnSettings
from provisioning.turn import mint, parse_turn_url
from tests.nat import (
    BACKOFFICE_ADDRESS,
    SCHOOL_WAN_ADDRESS,
    NatKind,
    Node,
    Topology,
    TurnServer,
    nat_topology,
)

pytestmark = pytest.mark.slow

SECRET = b"a-test-secret-for-coturn-0123456789"
PEER = Path(__file__).resolve().parents[1] / "turn_peer.py"


class Peer:
    """tests/turn_peer.py running in a namespace, its JSON lines read with a deadline."""

    def __init__(self, net: Topology, node: Node, argv: list[str]) -> None:
        self.process = net.spawn(
            node,
            [sys.executable, str(PEER), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def next(self, timeout: float = 10.0) -> dict[str, Any]:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer from the TURN peer in {timeout} s") from None

    def send(self, peer: list[Any], data: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"send": peer, "data": data}) + "\n")
        self.process.stdin.flush()


def turn_peer(
    net: Topology,
    node: Node,
    turn: TurnServer,
    transport: str = "udp",
    *,
    username: str,
    password: str,
    timeout: float = 20.0,
) -> Peer:
    port = turn.listening_port if transport != "tls" else turn.tls_listening_port
    argv = [
        "--server", f"{turn.address}:{port}", "--transport", transport,
        "--username", username, "--password", password,
        "--cafile", str(turn.certificate), "--timeout", str(timeout),
    ]  # fmt: skip
    return Peer(net, node, argv)


def allocate(net: Topology, node: Node, turn: TurnServer, transport: str, subject: str) -> Peer:
    credential = mint(SECRET, subject, int(time.time()) + 600)
    return turn_peer(
        net, node, turn, transport, username=credential.username, password=credential.password
    )


def exchange(kit: Peer, kit_relay: list[Any], pupil: Peer, pupil_relay: list[Any]) -> None:
    """Datagrams both ways between two relays. A relay drops data from a peer it has no
    permission for, and each side's first send creates its permission: so retry, bounded."""
    kit.send(pupil_relay, "opening")  # the kit's permission for the pupil's relay
    pupil.send(kit_relay, "opening")  # and the pupil's for the kit's
    relayed(kit, pupil_relay, pupil, kit_relay, "picture")
    relayed(pupil, kit_relay, kit, pupil_relay, "hand")


def relayed(
    sender: Peer, to: list[Any], receiver: Peer, sender_relay: list[Any], what: str
) -> None:
    other: list[dict[str, Any]] = []
    for attempt in range(20):
        sender.send(to, f"{what} {attempt}")
        try:
            got = receiver.next(timeout=0.5)
        except AssertionError:
            continue
        if got.get("received", "").startswith(what):
            assert got["from"] == sender_relay, got
            return
        other.append(got)
    raise AssertionError(f"no {what} relayed in 20 tries; the receiver said {other}")


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


@pytest.mark.parametrize(
    ("school", "firewall", "home", "transport"),
    [
        ("plain", "open", "plain", "udp"),
        ("symmetric", "open", "cgnat", "tcp"),
        ("plain", "udp3478-web", "symmetric", "udp"),
        ("symmetric", "web-only", "plain", "tls"),
    ],
)
def test_kit_and_pupil_relay_through_coturn_across_both_nats(
    tmp: Path, school: Any, firewall: Any, home: NatKind, transport: str
) -> None:
    with nat_topology(tmp, school=school, firewall=firewall, homes=[home]) as net:
        # TLS on 443: the only way out of a school that lets out nothing but web traffic.
        turn = net.start_turnserver(SECRET, tls_listening_port=443 if transport == "tls" else 5349)
        kit = allocate(net, net.kit, turn, transport, "class-1")
        pupil = allocate(net, net.homes[0].pupil, turn, "udp", "pupil-1")
        kit_allocation, pupil_allocation = kit.next(), pupil.next()
        assert "relayed" in kit_allocation, (kit_allocation, turn.log_text()[-3000:])
        assert "relayed" in pupil_allocation, (pupil_allocation, turn.log_text()[-3000:])
        # coturn saw each from its router's public address, not its private one.
        assert kit_allocation["mapped"][0] == SCHOOL_WAN_ADDRESS
        assert pupil_allocation["mapped"][0] == net.homes[0].public_address
        assert kit_allocation["relayed"][0] == turn.address
        exchange(kit, kit_allocation["relayed"], pupil, pupil_allocation["relayed"])


def test_school_firewall_presets_really_filter(tmp: Path) -> None:
    """UDP to TURN is dropped by a web-only school and gets out once the firewall lets UDP 3478
    out; TCP 3478 stays dropped (not web traffic). Dropped, so the client sees a timeout."""
    with nat_topology(tmp, firewall="web-only", homes=[]) as net:
        turn = net.start_turnserver(SECRET)
        assert short_attempt(net, turn, "udp").get("error") == "TimeoutError"
        net.set_school_firewall("udp3478-web")
        assert "relayed" in short_attempt(net, turn, "udp")
        assert short_attempt(net, turn, "tcp").get("error") == "TimeoutError"
        assert short_attempt(net, turn, "tls").get("error") == "TimeoutError"  # 5349: not web
        net.set_school_firewall("open")
        assert "relayed" in short_attempt(net, turn, "tcp")


def short_attempt(net: Topology, turn: TurnServer, transport: str) -> dict[str, Any]:
    """The kit's allocation over ``transport``, given up after 3 s."""
    credential = mint(SECRET, "class-1", int(time.time()) + 600)
    peer = turn_peer(
        net, net.kit, turn, transport,
        username=credential.username, password=credential.password, timeout=3,
    )  # fmt: skip
    return peer.next(timeout=10)


@pytest.fixture
def plain(tmp: Path) -> Iterator[tuple[Topology, TurnServer]]:
    with nat_topology(tmp) as net:
        yield net, net.start_turnserver(SECRET)


def test_expired_and_wrongly_signed_credentials_are_refused(
    plain: tuple[Topology, TurnServer],
) -> None:
    net, turn = plain
    pupil = net.homes[0].pupil
    now = int(time.time())
    expired = mint(SECRET, "pupil-1", now - 5)
    answer = turn_peer(net, pupil, turn, username=expired.username, password=expired.password)
    assert answer.next()["code"] == 401
    forged = mint(b"another-secret-0123456789", "pupil-1", now + 600)
    answer = turn_peer(net, pupil, turn, username=forged.username, password=forged.password)
    assert answer.next()["code"] == 401
    good = mint(SECRET, "pupil-1", now + 600)
    answer = turn_peer(net, pupil, turn, username=good.username, password=good.password)
    assert "relayed" in answer.next()


def relay_to_backoffice(net: Topology, turn: TurnServer) -> tuple[dict[str, Any], str]:
    """What the pupil's relay says when sending to the server's LAN, and what arrived there."""
    listener = net.spawn(
        net.backoffice,
        [sys.executable, "-c", LISTENER, BACKOFFICE_ADDRESS],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert listener.stdout is not None
    assert listener.stdout.readline().strip() == "ready"
    pupil = allocate(net, net.homes[0].pupil, turn, "udp", "pupil-1")
    assert "relayed" in pupil.next()
    pupil.send([BACKOFFICE_ADDRESS, 9999], "knock knock")
    try:
        answer = pupil.next(timeout=3)
    except AssertionError:
        answer = {}
    listener.wait(10)
    return answer, listener.stdout.read().strip()


LISTENER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9999))
s.settimeout(4)
print("ready", flush=True)
try:
    print(s.recv(100).decode(), flush=True)
except TimeoutError:
    print("nothing", flush=True)
"""


def test_the_relay_cannot_reach_private_networks(plain: tuple[Topology, TurnServer]) -> None:
    net, turn = plain
    answer, arrived = relay_to_backoffice(net, turn)
    assert answer.get("code") == 403, answer
    assert arrived == "nothing"


def test_without_denied_peer_ip_the_relay_would_reach_the_server_lan(tmp: Path) -> None:
    with nat_topology(tmp) as net:
        turn = net.start_turnserver(SECRET, keep_line=lambda line: "denied-peer-ip" not in line)
        answer, arrived = relay_to_backoffice(net, turn)
        assert arrived == "knock knock", answer


def test_a_pupils_credential_is_refused_once_its_class_and_margin_are_over(
    plain: tuple[Topology, TurnServer],
) -> None:
    """What the relay hands a pupil (provisioning/ice.py) works during the class and is
    refused by coturn once the class's expected end and the margin have passed: the server's
    clock is set back by a class length + margin + 30 s, as if the class had ended then."""
    net, turn = plain
    pupil = net.homes[0].pupil
    settings = TurnSettings(tuple(parse_turn_url(u) for u in turn.urls()[:1]), SECRET, 3600, 600)
    ended = time.time() - 3600 - 600 - 30
    for clock, outcome in ((time.time, "relayed"), (lambda: ended, "code")):
        issuer = IceIssuer(settings, clock=clock)
        links = [link for link in issuer.pupil_links(clock()) if link.startswith("<turn:")]
        params = dict(re.findall(r'; (\w+)="([^"]*)"', links[0]))
        answer = turn_peer(
            net, pupil, turn, username=params["username"], password=params["credential"]
        )
        reply = answer.next()
        assert outcome in reply, reply
        if outcome == "code":
            assert reply["code"] == 401, reply
