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
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.netns import _must, _run

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


def _in(namespace: str, *argv: str) -> None:
    _must("ip", "netns", "exec", namespace, *argv)


def _link(a: str, a_ns: str | None, b: str, b_ns: str, tag: str) -> None:
    """A veth pair ``a`` (in ``a_ns``, None = the test's namespace) ↔ ``b`` (in ``b_ns``); made
    under unique names in the test's namespace, then moved and renamed."""
    a_tmp = a if a_ns is None else f"xa{tag}"
    b_tmp = f"xb{tag}"
    _must("ip", "link", "add", a_tmp, "type", "veth", "peer", "name", b_tmp)
    for tmp, name, namespace in ((b_tmp, b, b_ns), (a_tmp, a, a_ns)):
        if namespace is not None:
            _must("ip", "link", "set", tmp, "netns", namespace)
            _must("ip", "-n", namespace, "link", "set", tmp, "name", name)


def _address(namespace: str | None, device: str, cidr: str) -> None:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    _must(*prefix, "ip", "addr", "add", cidr, "dev", device)
    _must(*prefix, "ip", "link", "set", device, "up")


def _router(namespace: str, lan: str, wan: str, dnat: str = "", forward_in: str = "") -> None:
    _in(namespace, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    rules = ROUTER_RULES.format(lan=lan, wan=wan, dnat=dnat, forward_in=forward_in)
    _must("ip", "netns", "exec", namespace, "nft", "-f", "-", stdin=rules)


@contextlib.contextmanager
def nat_path(kit_http_port: int) -> Iterator[NatPath]:
    """The topology above; ``kit_http_port``: where the kit's HTTP server listens on
    ``kit_address`` (the school router forwards ``FORWARDED_PORT`` to it)."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None:
        pytest.skip("the NAT topology needs root, iproute2 and nftables")
    tag = f"{os.getpid() % 10_000}{random.randrange(1000)}"
    n = random.randrange(100, 200)
    net = f"10.{n}"
    school, internet, home, pupil = (f"{x}{tag}" for x in ("nats", "nati", "nath", "natp"))
    made: list[str] = []
    kit_side = f"nk{tag}"
    stun: subprocess.Popen[str] | None = None
    try:
        for namespace in (school, internet, home, pupil):
            done = _run("ip", "netns", "add", namespace)
            if done.returncode != 0:
                pytest.skip(f"cannot create a network namespace: {done.stderr.strip()}")
            made.append(namespace)
            _in(namespace, "ip", "link", "set", "lo", "up")
        _link(kit_side, None, "lan", school, tag)
        _address(None, kit_side, f"{net}.1.1/24")
        _address(school, "lan", f"{net}.1.2/24")
        _link("wan", school, "toschool", internet, tag)
        _address(school, "wan", f"{net}.2.2/24")
        _address(internet, "toschool", f"{net}.2.1/24")
        _link("wan", home, "tohome", internet, tag)
        _address(home, "wan", f"{net}.3.2/24")
        _address(internet, "tohome", f"{net}.3.1/24")
        _link("lan", home, "eth0", pupil, tag)
        _address(home, "lan", f"{net}.4.1/24")
        _address(pupil, "eth0", f"{net}.4.2/24")
        _must("ip", "route", "add", f"{net}.0.0/16", "via", f"{net}.1.2")
        _in(school, "ip", "route", "add", "default", "via", f"{net}.2.1")
        _in(home, "ip", "route", "add", "default", "via", f"{net}.3.1")
        _in(pupil, "ip", "route", "add", "default", "via", f"{net}.4.1")
        _in(internet, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        dnat = f'iifname "wan" tcp dport {FORWARDED_PORT} dnat to {net}.1.1:{kit_http_port}'
        forward_in = f'iifname "wan" ip daddr {net}.1.1 tcp dport {kit_http_port} accept'
        _router(school, "lan", "wan", dnat, forward_in)
        _router(home, "lan", "wan")
        stun = subprocess.Popen(
            ["ip", "netns", "exec", internet, sys.executable, "-m",
             "tests.agent.webrtc.stun_server", f"{net}.2.1", str(STUN_PORT)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert stun.stdout is not None
        assert stun.stdout.readline().strip() == "ready", "the STUN server did not start"
        yield NatPath(
            kit_address=f"{net}.1.1",
            school_public=f"{net}.2.2",
            stun_url=f"stun:{net}.2.1:{STUN_PORT}",
            pupil_namespace=pupil,
            pupil_address=f"{net}.4.2",
        )
    finally:
        if stun is not None:
            stun.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                stun.communicate(timeout=5)
            if stun.poll() is None:
                stun.kill()
        _run("ip", "route", "del", f"{net}.0.0/16")
        _run("ip", "link", "del", kit_side)
        for namespace in made:
            _run("ip", "netns", "del", namespace)


def chromium_in(namespace: str, directory: Path) -> Path:
    """An executable that runs Debian's Chromium inside ``namespace`` (for Playwright's
    ``executable_path``: it talks to the browser over pipes, which ``ip netns exec`` keeps)."""
    wrapper = directory / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} /usr/bin/chromium "$@"\n')
    wrapper.chmod(0o755)
    return wrapper
