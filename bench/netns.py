"""Thin links for ``make bench-network``: the kit and five pupils in network namespaces.

::

    kit 10.77.0.1 (eth0) ── switch (a bridge, br0) ── pupil i 10.77.0.(10+i) (eth0), i = 0…4
                       port "kit"                  port "p<i>"

Every link is a veth pair; shaping is ``tc tbf`` (no netem on these kernels) on both ends of a
link, so both directions are limited: a pupil's link (:meth:`ThinNet.shape_pupil`) or the kit's
uplink, which the five pupils then share (:meth:`ThinNet.shape_kit`). Nothing is joined to the
machine's own namespace: the bench reaches the kit and the pupils only through processes it
starts in them (:meth:`ThinNet.spawn`, :meth:`ThinNet.wrapper`). Every namespace is named
``bnet-<pid>-<random>-…`` and deleted on exit, failure included, after the processes started in
it are ended; namespaces left by a killed run (its pid gone) are deleted by the next one.
Needs root, iproute2 and tc.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from .namespaces import NamespaceError, Namespaces, Node, check_usable, remove_stale, shape

__all__ = ["KIT_ADDRESS", "PREFIX", "NamespaceError", "Node", "ThinNet", "thin_net"]

PREFIX = "bnet-"
SUBNET = "10.77.0"
KIT_ADDRESS = f"{SUBNET}.1"
PUPILS = 5
TBF_BURST = "16kb"
"""Bytes the bucket holds (≈ 11 full packets): a home router's line, not a lab's cable."""
TBF_LATENCY = "50ms"
"""Longest a packet may wait in the queue before tbf drops it, as a modem's buffer would."""


class ThinNet(Namespaces):
    """The topology above (:func:`thin_net` builds it)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(PREFIX, workdir)
        self.switch = self.kit = Node("", "")  # made by build()
        self.pupils: list[Node] = []

    def build(self, pupils: int) -> None:
        self.switch = self.add("sw", device="br0")
        self.run(self.switch, "ip", "link", "add", "br0", "type", "bridge")
        self.run(self.switch, "ip", "link", "set", "br0", "up")
        self.kit = self._attach("kit", KIT_ADDRESS)
        self.pupils = [self._attach(f"p{i}", f"{SUBNET}.{10 + i}") for i in range(pupils)]

    def shape_pupil(self, index: int, kbps: int | None) -> None:
        """Pupil ``index``'s own link at ``kbps`` both ways (None: unshaped)."""
        pupil = self.pupils[index]
        self._shape(self.switch, f"p{index}", kbps)
        self._shape(pupil, pupil.device, kbps)

    def shape_kit(self, kbps: int | None) -> None:
        """The kit's uplink (shared by every pupil) at ``kbps`` both ways (None: unshaped)."""
        self._shape(self.switch, "kit", kbps)
        self._shape(self.kit, self.kit.device, kbps)

    def unshape(self) -> None:
        self.shape_kit(None)
        for index in range(len(self.pupils)):
            self.shape_pupil(index, None)

    @staticmethod
    def _shape(node: Node, device: str, kbps: int | None) -> None:
        rate = None if kbps is None else f"{kbps}kbit"
        shape(node, device, rate, TBF_BURST, TBF_LATENCY)

    def _attach(self, role: str, address: str) -> Node:
        """A new namespace whose eth0 is on the switch's bridge, as port ``role``."""
        node = self.add(role, address)
        self.link(self.switch, role, node, node.device)
        self.run(self.switch, "ip", "link", "set", role, "master", "br0")
        self.run(node, "ip", "addr", "add", f"{address}/24", "dev", node.device)
        return node


@contextlib.contextmanager
def thin_net(workdir: Path, pupils: int = PUPILS) -> Iterator[ThinNet]:
    """The topology above, torn down on exit whatever happens (raises :class:`NamespaceError`
    where namespaces cannot be made)."""
    check_usable("tc")
    remove_stale(PREFIX)
    net = ThinNet(workdir)
    try:
        net.build(pupils)
        yield net
    finally:
        net.tear_down()
