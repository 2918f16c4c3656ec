"""A pupil on a lossy path: a network namespace joined to the test's by a veth pair.

The kit (the agent, in the test's namespace) gets ``10.X.Y.1``, the pupil's namespace
``10.X.Y.2``. Loss is random and applied to what enters the pupil's namespace (the kit → pupil
direction: pictures, retransmissions, STUN answers). ``tc … netem loss 5%`` is the usual tool;
kernels built without netem (this CI's) get the same from nftables
(``numgen random mod 1000 < 50 drop``), so both are tried. Needs root; the test is skipped, with
the reason, only where network namespaces cannot be made.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


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


def _run(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=20)


def _must(*argv: str, stdin: str | None = None) -> None:
    done = _run(*argv, stdin=stdin)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


NFT_RULES = """
table inet lossy {{
  chain input {{
    type filter hook input priority 0; policy accept;
    meta l4proto udp numgen random mod 1000 < {per_mille} counter drop
  }}
}}
"""


def _add_loss(path: LossyPath, kit_side: str, percent: float) -> str:
    """netem on the kit side's veth (egress towards the pupil), else nftables in the pupil's
    namespace; returns which."""
    netem = _run("tc", "qdisc", "add", "dev", kit_side, "root", "netem", "loss", f"{percent}%")
    if netem.returncode == 0:
        return "netem"
    if shutil.which("nft") is None:
        pytest.skip(f"no netem in this kernel ({netem.stderr.strip()}) and no nft to drop instead")
    rules = NFT_RULES.format(per_mille=round(percent * 10))
    _must(*path.command("nft", "-f", "-"), stdin=rules)
    return "nftables"


def nft_dropped(path: LossyPath) -> int | None:
    """Packets the nftables rule dropped so far (None with netem)."""
    if path.method != "nftables":
        return None
    listing = _run(*path.command("nft", "list", "table", "inet", "lossy")).stdout
    words = listing.split()
    return int(words[words.index("packets") + 1]) if "packets" in words else None


@contextlib.contextmanager
def lossy_path(percent: float) -> Iterator[LossyPath]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    tag = f"{os.getpid() % 100_000}{random.randrange(100)}"
    namespace, kit_side, pupil_side = f"lossy{tag}", f"vk{tag}", f"vp{tag}"
    subnet = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
    made = _run("ip", "netns", "add", namespace)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        _must("ip", "link", "add", kit_side, "type", "veth", "peer", "name", pupil_side)
        _must("ip", "link", "set", pupil_side, "netns", namespace)
        _must("ip", "addr", "add", f"{subnet}.1/24", "dev", kit_side)
        _must("ip", "link", "set", kit_side, "up")
        path = LossyPath(namespace, f"{subnet}.1", f"{subnet}.2", "")
        _must(*path.command("ip", "addr", "add", f"{subnet}.2/24", "dev", pupil_side))
        _must(*path.command("ip", "link", "set", pupil_side, "up"))
        _must(*path.command("ip", "link", "set", "lo", "up"))
        method = _add_loss(path, kit_side, percent)
        yield LossyPath(namespace, path.kit_address, path.pupil_address, method)
    finally:
        _run("ip", "link", "del", kit_side)
        _run("ip", "netns", "del", namespace)
