"""A kit behind a school NAT and a pupil behind a home NAT, in network namespaces.

::

    test's namespace (the kit)  ── school router ── "internet" ── home router ── pupil
    10.N.1.1                  10.N.1.2 | 10.N.2.2   10.N.2.1      10.N.3.2 | 10.N.4.1   10.N.4.2
                                                    10.N.3.1
                                                    STUN :3478

Both routers masquerade (nftables) what leaves by their "internet" side, and let in only the
answers to what went out: the pupil can reach the kit only once the kit has sent to the
pupil's server-reflexive address, as between a real school and a real home, so a kit that
lost the pupil's candidates cannot connect by learning the pupil's address from its checks
(which works on a LAN). The school router also forwards one TCP port to the kit's HTTP server
(the pupil page and WHEP; in real life they come through the server's relay). The "internet"
namespace runs a small STUN server (``stun_server.py``) and has no route to either private
network. Like real routers, they drop what arrives unsolicited for themselves from the
internet side: a router that let it in would keep a connection-tracking entry for the pupil's
first check (sent before the kit's own), and map the kit's check to another port (a "clash"),
which no home NAT lets in. The test's namespace gets one route, for 10.N.0.0/16, towards the
school router; nothing reaches the real interfaces. Needs root; skipped, with the reason, where
namespaces cannot be made.
"""

from __future__ import annotations

import contextlib
import random
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.namespaces import NamespaceError, Namespaces, Node, check_usable, must, remove_stale, run

ROOT = Path(__file__).resolve().parents[3]
STUN_PORT = 3478
FORWARDED_PORT = 8080

ROUTER_RULES = """
table ip natpath {{
  chain input {{
    type filter hook input priority 0; policy accept;
    iifname "{wan}" ct state new drop
  }}
  chain forward {{
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "{lan}" accept
    {forward_in}
  }}
  chain prerouting {{
    type nat hook prerouting priority -100; policy accept;
    {dnat}
  }}
  chain postrouting {{
    type nat hook postrouting priority 100; policy accept;
    oifname "{wan}" masquerade
  }}
}}
"""


@dataclass(frozen=True)
class NatPath:
    kit_address: str
    """The kit's address (test's namespace), behind the school router."""
    school_public: str
    """The school router's "internet" address; TCP ``FORWARDED_PORT`` there reaches the kit."""
    stun_url: str
    """``stun:…`` of the STUN server on the "internet"."""
    pupil_namespace: str
    pupil_address: str

    def pupil_command(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.pupil_namespace, *argv]


PREFIX = "natp-"


def _address(net: Namespaces, node: Node | None, device: str, cidr: str) -> None:
    if node is None:  # the test's own namespace
        must("ip", "addr", "add", cidr, "dev", device)
    else:
        net.run(node, "ip", "addr", "add", cidr, "dev", device)


def _router(net: Namespaces, router: Node, dnat: str = "", forward_in: str = "") -> None:
    net.run(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    rules = ROUTER_RULES.format(lan="lan", wan="wan", dnat=dnat, forward_in=forward_in)
    net.run(router, "nft", "-f", "-", stdin=rules)


@contextlib.contextmanager
def nat_path(kit_http_port: int) -> Iterator[NatPath]:
    """The topology above; ``kit_http_port``: where the kit's HTTP server listens on
    ``kit_address`` (the school router forwards ``FORWARDED_PORT`` to it)."""
    try:
        check_usable("nft")
    except NamespaceError as exc:
        pytest.skip(f"the NAT topology: {exc}")
    remove_stale(PREFIX)
    net = Namespaces(PREFIX, Path(tempfile.gettempdir()))
    ip = f"10.{random.randrange(100, 200)}"
    kit_side = net.local_name("nk")
    stun: subprocess.Popen[str] | None = None
    try:
        try:
            school = net.add("school")
        except NamespaceError as exc:
            pytest.skip(str(exc))
        internet, home, pupil = net.add("internet"), net.add("home"), net.add("pupil")
        for upper, upper_device, lower, lower_device, upper_cidr, lower_cidr in (
            (None, kit_side, school, "lan", f"{ip}.1.1/24", f"{ip}.1.2/24"),
            (school, "wan", internet, "toschool", f"{ip}.2.2/24", f"{ip}.2.1/24"),
            (home, "wan", internet, "tohome", f"{ip}.3.2/24", f"{ip}.3.1/24"),
            (home, "lan", pupil, "eth0", f"{ip}.4.1/24", f"{ip}.4.2/24"),
        ):
            net.link(upper, upper_device, lower, lower_device)
            _address(net, upper, upper_device, upper_cidr)
            _address(net, lower, lower_device, lower_cidr)
        must("ip", "route", "add", f"{ip}.0.0/16", "via", f"{ip}.1.2")
        for node, gateway in ((school, f"{ip}.2.1"), (home, f"{ip}.3.1"), (pupil, f"{ip}.4.1")):
            net.run(node, "ip", "route", "add", "default", "via", gateway)
        net.run(internet, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        dnat = f'iifname "wan" tcp dport {FORWARDED_PORT} dnat to {ip}.1.1:{kit_http_port}'
        forward_in = f'iifname "wan" ip daddr {ip}.1.1 tcp dport {kit_http_port} accept'
        _router(net, school, dnat, forward_in)
        _router(net, home)
        stun = subprocess.Popen(
            [*internet.command(sys.executable, "-m", "tests.agent.webrtc.stun_server"),
             f"{ip}.2.1", str(STUN_PORT)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert stun.stdout is not None
        assert stun.stdout.readline().strip() == "ready", "the STUN server did not start"
        yield NatPath(
            kit_address=f"{ip}.1.1",
            school_public=f"{ip}.2.2",
            stun_url=f"stun:{ip}.2.1:{STUN_PORT}",
            pupil_namespace=pupil.namespace,
            pupil_address=f"{ip}.4.2",
        )
    finally:
        if stun is not None:
            stun.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                stun.communicate(timeout=5)
            if stun.poll() is None:
                stun.kill()
        run("ip", "route", "del", f"{ip}.0.0/16")
        run("ip", "link", "del", kit_side)
        net.tear_down()


def chromium_in(namespace: str, directory: Path) -> Path:
    """An executable that runs Debian's Chromium inside ``namespace`` (for Playwright's
    ``executable_path``: it talks to the browser over pipes, which ``ip netns exec`` keeps)."""
    wrapper = directory / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} /usr/bin/chromium "$@"\n')
    wrapper.chmod(0o755)
    return wrapper
