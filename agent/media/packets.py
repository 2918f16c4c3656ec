"""The unit that travels from a shared encoder to every viewer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import av

if TYPE_CHECKING:
    AvPacket = av.Packet[Any]
else:
    AvPacket = av.Packet


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One encoded frame (video) or 20 ms block (audio), shared read-only by every viewer.

    The encoder thread also cuts it into RTP payloads (``payloads``, with ``rtp_timestamp`` in
    the codec's clock rate), once for all viewers: a viewer's sender only adds its own RTP
    header, encrypts and sends.
    """

    packet: AvPacket
    keyframe: bool
    capture_time: float
    """``MediaClock.now()`` when the source captured it (for age checks and latency stats)."""
    size: int
    payloads: tuple[bytes, ...] = ()
    rtp_timestamp: int = 0
