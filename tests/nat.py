"""The real world in network namespaces: a server on a "public" network, a kit behind a school
NAT router (and its firewall), pupils behind home NAT routers or carrier-grade NAT (issue 12).

::

                       public bridge 203.0.113.0/24 (TEST-NET-3), in its own namespace
       ┌──────────────────┬────────────────────┬───────────────────────┬──────────────────┐
    server .10 (+ .11)  school router .20    home router .30+i       carrier router .50+i
    [turnserver, the     nft masquerade        nft masquerade          nft masquerade
     provisioning        [fully-random],       [fully-random]          │ 100.64.(1+i).0/24
     server]             firewall presets      │ 192.168.(10+i).0/24   home router .2
       │ 10.99.0.0/24      │ 10.20.0.0/24      pupil .2                │ 192.168.(10+i).0/24
    backoffice .2        kit .2 (+ pupil .3)                           pupil .2
    (the server's LAN, to show the relay cannot reach it)

Nothing is joined to the machine's own namespace, so nothing can route to its real interfaces:
the test reaches each namespace only through the processes it runs there
(:meth:`Topology.run`, :meth:`Topology.spawn`, :meth:`Topology.wrapper`). Every namespace name
starts with ``tnat-<pid>-<random>-`` (unique per run); all are deleted on exit, failure included,
after every process started in them is ended; namespaces left by a killed run (its pid gone)
are deleted by the next one. Needs root, iproute2 and nft; a test is skipped, with the reason,
only where the namespaces cannot be made (or, for :meth:`Topology.start_turnserver`, where
coturn is not installed).

NAT kinds: ``plain`` is Linux masquerade (keeps the source port when it can: endpoint-independent
mapping, address-and-port-dependent filtering, like most home routers); ``symmetric`` adds
``fully-random`` (a new port for every destination: server-reflexive candidates are useless, only
TURN gets through); ``cgnat`` is two plain layers (the carrier's 100.64.0.0/10, then the home's).

School firewalls (the school router's forward chain, changeable at any time with
:meth:`Topology.set_school_firewall`): ``open``; ``udp3478-web`` lets out only UDP 53 and 3478 and
TCP 80 and 443; ``web-only`` only TCP 80 and 443. What is refused is dropped, not rejected, as
real school firewalls do (a client sees a timeout, not an error).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from bench.namespaces import NamespaceError, Namespaces, Node, check_usable, must, remove_stale

REPO = Path(__file__).resolve().parents[1]
TURN_TEMPLATE = REPO / "systemd" / "turnserver.conf.in"

PUBLIC_PREFIX = 24
SERVER_ADDRESS = "203.0.113.10"
TURN_ADDRESS = "203.0.113.11"
"""A second address of the server's namespace: TURN on 443 beside HTTPS on 443 needs its own."""
SCHOOL_WAN_ADDRESS = "203.0.113.20"
SCHOOL_ROUTER_ADDRESS = "10.20.0.1"
KIT_ADDRESS = "10.20.0.2"
SCHOOL_PUPIL_ADDRESS = "10.20.0.3"
SERVER_LAN_ADDRESS = "10.99.0.1"
BACKOFFICE_ADDRESS = "10.99.0.2"

NatKind = Literal["plain", "symmetric", "cgnat"]
Firewall = Literal["open", "udp3478-web", "web-only"]
FIREWALLS: dict[str, str] = {
    "open": 'iifname "lan" accept',
    "udp3478-web": 'iifname "lan" udp dport { 53, 3478 } accept\n'
    '    iifname "lan" tcp dport { 80, 443 } accept',
    "web-only": 'iifname "lan" tcp dport { 80, 443 } accept',
}
PREFIX = "tnat-"


@dataclass(frozen=True)
class Home:
    kind: NatKind
    pupil: Node
    router: Node
    """The home router; its ``address`` is its WAN address (in 100.64.0.0/10 behind a CGN)."""
    carrier: Node | None
    """The carrier's NAT router (``cgnat`` only)."""
    public_address: str
    """The address the world sees the pupil's packets come from."""


@dataclass
class TurnServer:
    """A real ``turnserver`` running in the server's namespace (see :meth:`urls`)."""

    address: str
    listening_port: int
    tls_listening_port: int
    secret: bytes
    realm: str
    config: Path
    log: Path
    certificate: Path
    """The self-signed certificate it serves (CA file for TLS clients; names ``turn.test`` and
    the server's two public addresses)."""
    process: subprocess.Popen[bytes]

    def urls(self) -> list[str]:
        """UDP, TCP and TLS, in that order (coturn takes plain TCP and TLS on either port)."""
        host, plain, tls = self.address, self.listening_port, self.tls_listening_port
        return [
            f"turn:{host}:{plain}?transport=udp",
            f"turn:{host}:{plain}?transport=tcp",
            f"turns:{host}:{tls}?transport=tcp",
        ]

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


class Topology(Namespaces):
    """The topology above (:func:`nat_topology` builds it)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(PREFIX, workdir)
        nowhere = Node("", "")  # each made by nat_topology()
        self.public = self.server = self.backoffice = self.school_router = self.kit = nowhere
        self.homes: list[Home] = []
        self.school_pupil: Node | None = None
        """A pupil's machine on the school's LAN, beside the kit (``school_pupil=True``)."""
        self._uplinks: dict[str, tuple[str, str, str]] = {}
        """Node namespace → (its interface, the router's namespace, the router's interface)."""

    # -- the network -------------------------------------------------------------------------

    def set_school_firewall(self, preset: Firewall) -> None:
        """Replace the school router's forward rules by ``preset`` (atomically)."""
        rules = FIREWALLS[preset]
        script = (
            "table inet school {}\ndelete table inet school\n"
            "table inet school {\n  chain forward {\n"
            "    type filter hook forward priority 0; policy drop;\n"
            "    ct state established,related accept\n"
            f"    {rules}\n  }}\n}}\n"
        )
        self.run(self.school_router, "nft", "-f", "-", stdin=script)

    def shape(self, node: Node, rate: str, burst: str = "32kbit", latency: str = "50ms") -> None:
        """``tc tbf`` on ``node``'s uplink, both ways (``rate`` like ``"2mbit"``)."""
        own, router_namespace, router_side = self._uplinks[node.namespace]
        for namespace, device in ((node.namespace, own), (router_namespace, router_side)):
            must(
                "ip", "netns", "exec", namespace, "tc", "qdisc", "replace", "dev", device,
                "root", "tbf", "rate", rate, "burst", burst, "latency", latency,
            )  # fmt: skip

    def certificate(self) -> tuple[Path, Path]:
        """A self-signed certificate and key for ``turn.test`` and the server's addresses (made
        once per topology), for coturn's TLS and any HTTPS server of the test."""
        cert, key = self.workdir / "server-cert.pem", self.workdir / "server-key.pem"
        if not cert.exists():
            must(
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=turn.test",
                "-addext", f"subjectAltName=DNS:turn.test,IP:{SERVER_ADDRESS},IP:{TURN_ADDRESS}",
                "-keyout", str(key), "-out", str(cert),
            )  # fmt: skip
        return cert, key

    # -- coturn ------------------------------------------------------------------------------

    def start_turnserver(
        self,
        secret: bytes,
        *,
        address: str = TURN_ADDRESS,
        listening_port: int = 3478,
        tls_listening_port: int = 5349,
        realm: str = "turn.test",
        keep_line: Callable[[str], bool] | None = None,
        extra_args: Sequence[str] = (),
    ) -> TurnServer:
        """A real ``turnserver`` in the server's namespace, configured from the template the
        install script uses (systemd/turnserver.conf.in), listening and relaying on ``address``
        only; returns once its ports listen. ``keep_line`` drops template lines (a test that
        must be able to fail, e.g. without ``denied-peer-ip``)."""
        binary = shutil.which("turnserver")
        if binary is None:
            pytest.skip("coturn is not installed (apt-get install coturn; make setup does)")
        cert, key = self.certificate()
        name = f"turnserver-{listening_port}-{tls_listening_port}-{len(self._processes)}"
        config = self.workdir / f"{name}.conf"
        text = render_turn_config(
            secret, realm, cert, key, listening_port, tls_listening_port, keep_line
        )
        config.write_text(text)
        config.chmod(0o600)
        log = self.workdir / f"{name}.log"
        argv = [
            binary, "-c", str(config), "--pidfile=", "--db", str(self.workdir / f"{name}.db"),
            "--listening-ip", address, "--relay-ip", address, *extra_args,
        ]  # fmt: skip
        with log.open("wb") as sink:
            process = self.spawn(self.server, argv, stdout=sink, stderr=subprocess.STDOUT)
        turn = TurnServer(
            address, listening_port, tls_listening_port, secret, realm, config, log, cert, process
        )
        self._wait_listening(turn)
        return turn

    def _wait_listening(self, turn: TurnServer, timeout: float = 10.0) -> None:
        wanted = {
            f"{turn.address}:{turn.listening_port}",
            f"{turn.address}:{turn.tls_listening_port}",
        }
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if turn.process.poll() is not None:
                raise RuntimeError(
                    f"turnserver exited ({turn.process.returncode}):\n{turn.log_text()}"
                )
            listening = self.run(self.server, "ss", "-Hltn").stdout
            if all(f" {endpoint} " in listening for endpoint in wanted):
                return
            time.sleep(0.1)
        raise RuntimeError(f"turnserver not listening on {sorted(wanted)} in {timeout} s")

    # -- building --------------------------------------------------------------------------

    def _link(
        self, upper: Node, upper_device: str, lower: Node, lower_device: str = "eth0"
    ) -> None:
        """A veth pair between two namespaces (``upper`` the router side)."""
        self.link(upper, upper_device, lower, lower_device)
        self._uplinks[lower.namespace] = (lower_device, upper.namespace, upper_device)

    def _on_public(self, node: Node, device: str, *addresses: str) -> None:
        self._links += 1
        port = f"p{self._links}"
        self._link(self.public, port, node, device)
        must("ip", "-n", self.public.namespace, "link", "set", port, "master", "br0")
        for address in addresses:
            must(
                "ip",
                "-n",
                node.namespace,
                "addr",
                "add",
                f"{address}/{PUBLIC_PREFIX}",
                "dev",
                device,
            )

    def _router(
        self, router: Node, lan_address: str, clients: Sequence[Node], symmetric: bool
    ) -> None:
        """``clients`` on a LAN (a bridge, ``lan``) behind ``router`` (its WAN device, ``wan``,
        is already set up)."""
        must("ip", "-n", router.namespace, "link", "add", "lan", "type", "bridge")
        must("ip", "-n", router.namespace, "link", "set", "lan", "up")
        must("ip", "-n", router.namespace, "addr", "add", f"{lan_address}/24", "dev", "lan")
        for client in clients:
            self._links += 1
            port = f"l{self._links}"
            self._link(router, port, client)
            must("ip", "-n", router.namespace, "link", "set", port, "master", "lan")
            must("ip", "-n", client.namespace, "addr", "add", f"{client.address}/24", "dev", "eth0")
            must("ip", "-n", client.namespace, "route", "add", "default", "via", lan_address)
        must("ip", "netns", "exec", router.namespace, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        random = " fully-random" if symmetric else ""
        nat = (
            "table ip nat {\n  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "wan" masquerade{random}\n  }}\n}}\n'
        )
        must("ip", "netns", "exec", router.namespace, "nft", "-f", "-", stdin=nat)

    def _home(self, index: int, kind: NatKind) -> Home:
        lan = f"192.168.{10 + index}"
        pupil = self.add(f"pupil{index}", f"{lan}.2")
        if kind != "cgnat":
            router = self.add(f"home{index}", f"203.0.113.{30 + index}")
            self._on_public(router, "wan", router.address)
            self._router(router, f"{lan}.1", [pupil], symmetric=kind == "symmetric")
            return Home(kind, pupil, router, None, router.address)
        carrier = self.add(f"cgn{index}", f"203.0.113.{50 + index}")
        self._on_public(carrier, "wan", carrier.address)
        inside = f"100.64.{1 + index}"
        router = self.add(f"home{index}", f"{inside}.2")
        self._link(carrier, "lan", router, "wan")
        must("ip", "-n", carrier.namespace, "addr", "add", f"{inside}.1/24", "dev", "lan")
        must("ip", "-n", router.namespace, "addr", "add", f"{router.address}/24", "dev", "wan")
        must("ip", "-n", router.namespace, "route", "add", "default", "via", f"{inside}.1")
        must(
            "ip", "netns", "exec", carrier.namespace, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"
        )
        nat = (
            "table ip nat {\n  chain postrouting {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            '    oifname "wan" masquerade\n  }\n}\n'
        )
        must("ip", "netns", "exec", carrier.namespace, "nft", "-f", "-", stdin=nat)
        self._router(router, f"{lan}.1", [pupil], symmetric=False)
        return Home(kind, pupil, router, carrier, carrier.address)


def render_turn_config(
    secret: bytes,
    realm: str,
    cert: Path,
    key: Path,
    listening_port: int = 3478,
    tls_listening_port: int = 5349,
    keep_line: Callable[[str], bool] | None = None,
) -> str:
    """systemd/turnserver.conf.in filled in, as install-server.sh does with sed."""
    values = {
        "@SECRET@": secret.decode("ascii"),
        "@REALM@": realm,
        "@CERT@": str(cert),
        "@PKEY@": str(key),
        "@LISTENING_PORT@": str(listening_port),
        "@TLS_LISTENING_PORT@": str(tls_listening_port),
    }
    text = TURN_TEMPLATE.read_text(encoding="utf-8")
    text = re.sub("|".join(values), lambda match: values[match.group(0)], text)
    lines = text.splitlines(keepends=True)
    return "".join(line for line in lines if keep_line is None or keep_line(line))


@contextlib.contextmanager
def nat_topology(
    workdir: Path,
    *,
    school: Literal["plain", "symmetric"] = "plain",
    firewall: Firewall = "open",
    homes: Sequence[NatKind] = ("plain",),
    school_pupil: bool = False,
) -> Iterator[Topology]:
    """The topology above: a school NAT (``plain`` or ``symmetric``) with ``firewall``, one
    home per entry of ``homes`` and, with ``school_pupil``, a pupil's machine on the school LAN
    beside the kit (10.20.0.3); torn down on exit, whatever happens."""
    try:
        check_usable("nft")
    except NamespaceError as exc:
        pytest.skip(str(exc))
    remove_stale(PREFIX)
    net = Topology(workdir)
    try:
        try:
            net.public = net.add("pub")
        except NamespaceError as exc:
            pytest.skip(str(exc))
        net.run(net.public, "ip", "link", "add", "br0", "type", "bridge")
        net.run(net.public, "ip", "link", "set", "br0", "up")
        net.server = net.add("server", SERVER_ADDRESS)
        net._on_public(net.server, "eth0", SERVER_ADDRESS, TURN_ADDRESS)
        net.backoffice = net.add("office", BACKOFFICE_ADDRESS)
        net._link(net.server, "lan", net.backoffice)
        must(
            "ip",
            "-n",
            net.server.namespace,
            "addr",
            "add",
            f"{SERVER_LAN_ADDRESS}/24",
            "dev",
            "lan",
        )
        must(
            "ip",
            "-n",
            net.backoffice.namespace,
            "addr",
            "add",
            f"{BACKOFFICE_ADDRESS}/24",
            "dev",
            "eth0",
        )
        net.school_router = net.add("school", SCHOOL_WAN_ADDRESS)
        net._on_public(net.school_router, "wan", SCHOOL_WAN_ADDRESS)
        net.kit = net.add("kit", KIT_ADDRESS)
        lan = [net.kit]
        if school_pupil:
            net.school_pupil = net.add("lanpupil", SCHOOL_PUPIL_ADDRESS)
            lan.append(net.school_pupil)
        net._router(net.school_router, SCHOOL_ROUTER_ADDRESS, lan, symmetric=school == "symmetric")
        net.set_school_firewall(firewall)
        net.homes = [net._home(index, kind) for index, kind in enumerate(homes)]
        yield net
    finally:
        net.tear_down()


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    """The default topology: a plain school NAT, open firewall, one plain home."""
    with nat_topology(tmp_path) as net:
        yield net
