"""The NAT topology harness (tests/nat.py) does what it says: private networks are unreachable
from outside, NATs rewrite as their kind says (plain keeps the port, symmetric does not, CGNAT is
seen from the carrier), the shaping limits, and nothing is left behind, failure included."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.nat import KIT_ADDRESS, SCHOOL_WAN_ADDRESS, SERVER_ADDRESS, Node, Topology, nat_topology

pytestmark = pytest.mark.slow

ECHO = """
import select, socket, sys
sockets = []
for port in (7001, 7002):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[1], port))
    sockets.append(s)
print("ready", flush=True)
while True:
    for s in select.select(sockets, [], [], 10)[0]:
        data, peer = s.recvfrom(100)
        s.sendto(f"{peer[0]}:{peer[1]}".encode(), peer)
"""

ASK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
for port in (7001, 7002):
    s.sendto(b"who am I", (sys.argv[1], port))
    print(s.recv(100).decode())
"""

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
    print("connected")
except OSError as error:
    print(type(error).__name__)
"""


def seen_as(net: Topology, node: Node) -> list[str]:
    """How the server sees ``node``'s one UDP socket sending to two of its ports."""
    return net.run(node, sys.executable, "-c", ASK, SERVER_ADDRESS).stdout.split()


def start_echo(net: Topology) -> None:
    echo = net.spawn(
        net.server, [sys.executable, "-c", ECHO, SERVER_ADDRESS], stdout=subprocess.PIPE, text=True
    )
    assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"


def test_nats_rewrite_as_their_kind_says(tmp_path: Path) -> None:
    with nat_topology(tmp_path, school="symmetric", homes=["plain", "cgnat"]) as net:
        start_echo(net)
        plain, cgnat = net.homes
        first, second = seen_as(net, plain.pupil)
        assert first == second and first.startswith(f"{plain.public_address}:")
        first, second = seen_as(net, cgnat.pupil)  # two plain layers: the carrier's address
        assert cgnat.carrier is not None and cgnat.public_address == cgnat.carrier.address
        assert first == second and first.startswith(f"{cgnat.carrier.address}:")
        first, second = seen_as(net, net.kit)  # fully-random: one port per destination
        assert first.split(":")[0] == second.split(":")[0] == SCHOOL_WAN_ADDRESS
        assert first != second


def test_private_networks_are_unreachable_from_outside(tmp_path: Path) -> None:
    with nat_topology(tmp_path) as net:
        listener = net.spawn(
            net.kit, [sys.executable, "-m", "http.server", "--bind", KIT_ADDRESS, "8080"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while (
            "connected"
            not in net.run(net.kit, sys.executable, "-c", CONNECT, KIT_ADDRESS, "8080").stdout
        ):
            assert time.monotonic() < deadline and listener.poll() is None
            time.sleep(0.1)
        outside = net.run(net.homes[0].pupil, sys.executable, "-c", CONNECT, KIT_ADDRESS, "8080")
        assert outside.stdout.strip() in ("OSError", "TimeoutError"), outside.stdout  # no route
        server = net.run(net.server, sys.executable, "-c", CONNECT, KIT_ADDRESS, "8080")
        assert server.stdout.strip() != "connected"


def test_shaping_limits_the_rate(tmp_path: Path) -> None:
    """250 kB from the pupil at 1 Mbit/s: 2 s at the receiving end (the sender's buffers hide
    it on the sending side)."""
    sink = (
        "import socket, sys, time\ns = socket.create_server((sys.argv[1], 7100))\n"
        "print('ready', flush=True)\nc, _ = s.accept()\nc.recv(1)\nstart = time.monotonic()\n"
        "while c.recv(65536): pass\nprint(time.monotonic() - start, flush=True)\n"
    )
    send = (
        "import socket, sys\nc = socket.create_connection((sys.argv[1], 7100), timeout=20)\n"
        "c.sendall(bytes(250_000))\nc.close()\n"
    )
    with nat_topology(tmp_path) as net:
        pupil = net.homes[0].pupil
        net.shape(pupil, "1mbit", burst="16kbit", latency="400ms")
        assert "tbf" in net.run(pupil, "tc", "qdisc", "show", "dev", "eth0").stdout
        receiver = net.spawn(
            net.server, [sys.executable, "-c", sink, SERVER_ADDRESS], stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
        net.run(pupil, sys.executable, "-c", send, SERVER_ADDRESS)
        seconds = float(receiver.stdout.readline())
        assert 1.5 < seconds < 6, f"250 kB at 1 Mbit/s took {seconds:.2f} s"


def test_wrapper_runs_the_program_inside(tmp_path: Path) -> None:
    with nat_topology(tmp_path, homes=[]) as net:
        wrapper = net.wrapper(net.kit, "/usr/sbin/ip")
        shown = subprocess.run([str(wrapper), "-4", "addr"], capture_output=True, text=True)
        assert f"inet {KIT_ADDRESS}/24" in shown.stdout


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_everything_is_torn_down_even_on_failure(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError), nat_topology(tmp_path, homes=["cgnat"]) as net:
        sleeper = net.spawn(net.kit, ["sleep", "600"])
        assert net.tag in namespaces()
        1 / 0  # noqa: B018
    assert net.tag not in namespaces()
    assert sleeper.poll() is not None
