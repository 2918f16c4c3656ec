"""The unit that travels from a shared encoder to every viewer."""

from __future__ import annotations

from dataclasses import dataclass

import av


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded frame (video) or 20 ms block (audio), shared read-only by every viewer.

    ``packet`` is handed to aiortc as is: its sender only packetizes it (``pack``), so the same
    object serves all viewers and nothing is encoded twice.
    """

    packet: av.Packet
    keyframe: bool
    capture_time: float
    """``MediaClock.now()`` when the source captured it (for age checks and latency stats)."""
    size: int
