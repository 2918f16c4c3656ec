"""RTP payloads of an encoded frame, cut once for every viewer (RFC 6184, RFC 7741, RFC 7587).

aiortc's codec classes already implement the payload formats (H.264 FU-A/STAP-A, VP8 payload
descriptor with picture id, Opus as is); we reuse their ``pack`` on the encoder's thread so the
event loop never splits a bitstream. The VP8 packer numbers pictures, so there is one packer per
encoder: every viewer of that encoder sees the same picture ids, which is what they need.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

from aiortc.codecs import h264, vpx

from ..clock import AUDIO_RATE
from ..media.packets import AvPacket

Packer = Callable[[AvPacket], tuple[tuple[bytes, ...], int]]


def make_packer(codec: str) -> Packer:
    """A packer for ``h264``, ``vp8`` or ``opus``: packet → (payloads, RTP timestamp)."""
    if codec == "opus":
        return _pack_opus
    packer = {"h264": h264.H264Encoder, "vp8": vpx.Vp8Encoder}[codec]()

    def pack(packet: AvPacket) -> tuple[tuple[bytes, ...], int]:
        payloads, timestamp = packer.pack(packet)
        return tuple(payloads), timestamp

    return pack


def _pack_opus(packet: AvPacket) -> tuple[tuple[bytes, ...], int]:
    pts = packet.pts or 0
    time_base = packet.time_base or Fraction(1, AUDIO_RATE)
    return (bytes(packet),), int(pts * time_base * AUDIO_RATE)
