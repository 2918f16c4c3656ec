"""A pupil on a lossy or a shaped path: a network namespace joined to the test's by a veth pair.

The kit (the agent, in the test's namespace) gets ``10.X.Y.1``, the pupil's namespace
``10.X.Y.2``. Loss is random and applied to what enters the pupil's namespace (the kit → pupil
direction: pictures, retransmissions, STUN answers). ``tc … netem loss 5%`` is the usual tool;
kernels built without netem (this CI's) get the same from nftables
(``numgen random mod 1000 < 50 drop``), so both are tried. Needs root; the test is skipped, with
the reason, only where network namespaces cannot be made.
"""

from __future__ import annotations

import contextlib
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.namespaces import (
    NamespaceError,
    Namespaces,
    Node,
    check_usable,
    must,
    remove_stale,
    run,
    shape,
)

PREFIX = "lossy-"


@dataclass(frozen=True)
class LossyPath:
    namespace: str
    kit_address: str
    pupil_address: str
    method: str
    """``netem`` or ``nftables``: how the loss is made."""

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the pupil's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


NFT_RULES = """
table inet lossy {{
  chain input {{
    type filter hook input priority 0; policy accept;
    meta l4proto udp numgen random mod 1000 < {per_mille} counter drop
  }}
}}
"""


def _add_loss(net: Namespaces, pupil: Node, kit_side: str, percent: float) -> str:
    """netem on the kit side's veth (egress towards the pupil), else nftables in the pupil's
    namespace; returns which."""
    netem = run("tc", "qdisc", "add", "dev", kit_side, "root", "netem", "loss", f"{percent}%")
    if netem.returncode == 0:
        return "netem"
    try:
        check_usable("nft")
    except NamespaceError:
        pytest.skip(f"no netem in this kernel ({netem.stderr.strip()}) and no nft to drop instead")
    net.run(pupil, "nft", "-f", "-", stdin=NFT_RULES.format(per_mille=round(percent * 10)))
    return "nftables"


def nft_dropped(path: LossyPath) -> int | None:
    """Packets the nftables rule dropped so far (None with netem)."""
    if path.method != "nftables":
        return None
    listing = run(*path.command("nft", "list", "table", "inet", "lossy")).stdout
    words = listing.split()
    return int(words[words.index("packets") + 1]) if "packets" in words else None


@dataclass(frozen=True)
class PupilLink:
    namespace: str
    kit_address: str
    pupil_address: str
    kit_side: str
    """The veth's end in the test's namespace: what the kit sends to the pupil leaves by it."""

    def shape(self, rate: str | None) -> None:
        """Shape what the kit sends to the pupil (pictures, retransmissions) to ``rate``
        (``"800kbit"``) with ``tc tbf``, or take the shaping away (None); at any time."""
        shape(None, self.kit_side, rate, burst="32kbit", latency="100ms")


@dataclass(frozen=True)
class _Veth:
    net: Namespaces
    pupil: Node
    kit_side: str
    """The veth's end in the test's namespace: what the kit sends to the pupil leaves by it."""
    kit_address: str


@contextlib.contextmanager
def _pupil_beside_the_kit(prefix: str, *tools: str) -> Iterator[_Veth]:
    """A namespace for one pupil (``10.X.Y.2``) joined to the test's (``10.X.Y.1``) by a veth
    pair; skipped, with the reason, where namespaces cannot be made; torn down on exit."""
    try:
        check_usable(*tools)
    except NamespaceError as exc:
        pytest.skip(str(exc))
    remove_stale(prefix)
    net = Namespaces(prefix, Path(tempfile.gettempdir()))
    subnet = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
    kit_side = net.local_name("vk")
    try:
        try:
            pupil = net.add("pupil", f"{subnet}.2")
        except NamespaceError as exc:
            pytest.skip(str(exc))
        net.link(None, kit_side, pupil)
        must("ip", "addr", "add", f"{subnet}.1/24", "dev", kit_side)
        net.run(pupil, "ip", "addr", "add", f"{pupil.address}/24", "dev", pupil.device)
        yield _Veth(net, pupil, kit_side, f"{subnet}.1")
    finally:
        run("ip", "link", "del", kit_side)
        net.tear_down()


@contextlib.contextmanager
def lossy_path(percent: float) -> Iterator[LossyPath]:
    with _pupil_beside_the_kit(PREFIX) as veth:
        method = _add_loss(veth.net, veth.pupil, veth.kit_side, percent)
        yield LossyPath(veth.pupil.namespace, veth.kit_address, veth.pupil.address, method)


@contextlib.contextmanager
def pupil_link(rate: str | None) -> Iterator[PupilLink]:
    """A pupil on a link of ``rate`` (``"800kbit"``; None: unshaped): ``tc tbf`` on the kit's
    side of the veth shapes what the kit sends to the pupil (pictures, retransmissions)."""
    with _pupil_beside_the_kit("bw-", "tc") as veth:
        link = PupilLink(veth.pupil.namespace, veth.kit_address, veth.pupil.address, veth.kit_side)
        if rate is not None:
            link.shape(rate)
        yield link
