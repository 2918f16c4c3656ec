"""Per-viewer tracks that carry already-encoded packets.

A :class:`PacketTrack` is what a viewer's sender reads (through ``rtpsend.LeanRtpLoop``): the
shared :class:`EncodedPacket` from the viewer's fan-out queue, already cut into RTP payloads, so
nothing is encoded or packetized per viewer.

It subscribes lazily, on the sender's first ``recv()``: that happens once DTLS is up, so the
viewer's queue never holds packets from before it could send them, and the keyframe asked for
on subscription is the first thing it sends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..media.fanout import QueueClosed, ViewerQueue
from ..media.packets import AvPacket, EncodedPacket


class PacketTrack(MediaStreamTrack):
    """One viewer's view of one shared stream (room camera, document camera or microphone)."""

    def __init__(self, kind: str, track_id: str) -> None:
        super().__init__()
        self.kind = kind
        self._track_id = track_id
        self._subscribe: Callable[[], ViewerQueue | None] | None = None
        self._unsubscribe: Callable[[ViewerQueue], None] | None = None
        self._bound = asyncio.Event()
        self._queue: ViewerQueue | None = None
        self.codec = ""
        self.packets_sent = 0
        self.bytes_sent = 0
        self.keyframe_requests = 0
        self.retransmitted = 0
        """Packets sent again on a NACK from this viewer (rtpsend.LeanRtpLoop.retransmit)."""
        self.nacks_ignored = 0
        """NACKed packets not sent again: over the pupil's budget, or resent within an RTT."""
        self.rtp_packets = 0
        """RTP packets sent (counted per frame)."""
        self.reported_lost = 0
        """RTP packets the pupil reported lost so far (its receiver reports, cumulative)."""

    @property
    def id(self) -> str:
        """Stable id (``camera``, ``document``, ``microphone``): the msid a page can rely on."""
        return self._track_id

    def bind(
        self,
        codec: str,
        subscribe: Callable[[], ViewerQueue | None],
        unsubscribe: Callable[[ViewerQueue], None],
    ) -> None:
        """Attach to the negotiated codec's stream (after the answer is known)."""
        self.codec = codec
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._bound.set()

    async def recv(self) -> AvPacket:
        """The aiortc track interface (not used by our senders, which call next_packet)."""
        return (await self.next_packet()).packet

    async def next_packet(self) -> EncodedPacket:
        """The next shared packet for this viewer, with its RTP payloads already cut."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._queue is None:
            await self._bound.wait()
            assert self._subscribe is not None
            self._queue = self._subscribe()
            if self._queue is None:  # this source is not configured: send nothing, forever
                await asyncio.Event().wait()
        assert self._queue is not None
        try:
            item = await self._queue.get()
        except QueueClosed:
            self.stop()
            raise MediaStreamError from None
        return item

    def count_sent(self, item: EncodedPacket) -> None:
        self.packets_sent += 1
        self.bytes_sent += item.size
        self.rtp_packets += len(item.payloads)

    def request_keyframe(self) -> None:
        """A PLI or FIR from this viewer: ask the shared encoder (rate-limited there)."""
        self.keyframe_requests += 1
        if self._queue is not None:
            self._queue.request_keyframe()

    def stop(self) -> None:
        queue, self._queue = self._queue, None
        if queue is not None and self._unsubscribe is not None:
            self._unsubscribe(queue)
        super().stop()

    def stats(self) -> dict[str, object]:
        out: dict[str, object] = {
            "codec": self.codec,
            "packets": self.packets_sent,
            "bytes": self.bytes_sent,
            "keyframe_requests": self.keyframe_requests,
            "retransmitted": self.retransmitted,
            "nacks_ignored": self.nacks_ignored,
            "rtp_packets": self.rtp_packets,
            "lost": self.reported_lost,
        }
        if self._queue is not None:
            out.update(self._queue.stats())
        return out
