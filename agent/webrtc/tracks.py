"""Per-viewer tracks that carry already-encoded packets.

A :class:`PacketTrack` is what a viewer's sender reads (through ``rtpsend.LeanRtpLoop``): the
shared :class:`EncodedPacket` from the viewer's fan-out queue, already cut into RTP payloads, so
nothing is encoded or packetized per viewer.

It subscribes lazily, on the sender's first ``recv()``: that happens once DTLS is up, so the
viewer's queue never holds packets from before it could send them, and the keyframe asked for
on subscription is the first thing it sends.

A video track follows the quality layer the pupil's allocation chose (:meth:`PacketTrack.want`,
docs/adaptation.md): it subscribes to the new layer at once — which asks that layer's encoder
for a keyframe — and keeps sending the old layer until the new one's first packet, a keyframe,
is queued; then it switches, so the pupil's decoder never gets a frame that refers to a picture
of another layer. Same SSRC and sequence numbers throughout: to the browser it is one stream
whose resolution changes at a keyframe. ``paused`` sends nothing; ``keyframes`` sends only the
layer's keyframes (the document camera's last step before pausing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ..media.fanout import QueueClosed, ViewerQueue
from ..media.packets import AvPacket, EncodedPacket

PAUSED = "paused"
KEYFRAMES = "keyframes"
"""Not a layer: the lowest layer's keyframes only."""


def _stream_of(layer: str) -> str:
    """The layer whose stream a track state reads: keyframes-only reads the low layer's."""
    return "low" if layer == KEYFRAMES else layer


Subscribe = Callable[[str], ViewerQueue | None]
"""Subscribe to a layer (by name; audio ignores it)."""
Unsubscribe = Callable[[ViewerQueue, str], None]


class PacketTrack(MediaStreamTrack):
    """One viewer's view of one shared stream (room camera, document camera or microphone)."""

    def __init__(self, kind: str, track_id: str) -> None:
        super().__init__()
        self.kind = kind
        self._track_id = track_id
        self._subscribe: Subscribe | None = None
        self._unsubscribe: Unsubscribe | None = None
        self._bound = asyncio.Event()
        self._queue: ViewerQueue | None = None
        self._wake = asyncio.Event()
        self.layer = "high"
        """The layer being sent (``paused``: none)."""
        self.keyframes_only = False
        self._pending: tuple[str, ViewerQueue | None] | None = None
        """The layer asked for and its queue, until its first keyframe is queued."""
        self._wanted = "high"
        self._subscribed = False
        self.switches = 0
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
        self, codec: str, subscribe: Subscribe, unsubscribe: Unsubscribe, layer: str = "high"
    ) -> None:
        """Attach to the negotiated codec's streams (after the answer is known), starting on
        ``layer``."""
        self.codec = codec
        self._subscribe = subscribe
        self._unsubscribe = unsubscribe
        self._wanted = self.layer = layer
        self._bound.set()

    def want(self, layer: str) -> None:
        """Switch to ``layer`` (a layer name, ``keyframes`` or ``paused``) at its next keyframe.
        Before the first packet it just sets where to start."""
        self._wanted = layer
        if not self._subscribed:
            self.layer = layer
            return
        source = _stream_of(layer)
        current = PAUSED if self._queue is None else _stream_of(self.layer)
        if self._pending is not None:
            if self._pending[0] == layer:
                return
            self._drop_pending()
        if source == current:
            self.layer = layer  # low ↔ keyframes only: the same queue
            self.keyframes_only = layer == KEYFRAMES
            return
        queue = None if source == PAUSED else self._open(source)
        self._pending = (layer, queue)
        if queue is None:
            self._switch()  # pausing needs no keyframe
        self._wake.set()

    def _open(self, layer: str) -> ViewerQueue | None:
        assert self._subscribe is not None
        queue = self._subscribe(layer)
        if queue is not None:
            queue.wakeup = self._wake.set
        return queue

    def _drop_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and pending[1] is not None and self._unsubscribe is not None:
            self._unsubscribe(pending[1], _stream_of(pending[0]))

    def _switch(self) -> None:
        assert self._pending is not None
        layer, queue = self._pending
        self._pending = None
        old, self._queue = self._queue, queue
        if old is not None and self._unsubscribe is not None:
            self._unsubscribe(old, _stream_of(self.layer))
        self.layer = layer
        self.keyframes_only = layer == KEYFRAMES
        self.switches += 1

    async def recv(self) -> AvPacket:
        """The aiortc track interface (not used by our senders, which call next_packet)."""
        return (await self.next_packet()).packet

    async def next_packet(self) -> EncodedPacket:
        """The next shared packet for this viewer, with its RTP payloads already cut."""
        if self.readyState != "live":
            raise MediaStreamError
        if not self._subscribed:
            await self._bound.wait()
            self._subscribed = True
            if self.layer != PAUSED:
                self._queue = self._open(_stream_of(self.layer))
                if self._queue is None:  # this source is not configured: send nothing, forever
                    await asyncio.Event().wait()
        try:
            while True:
                if self.readyState != "live":
                    raise MediaStreamError
                pending = self._pending
                if pending is not None and pending[1] is not None and len(pending[1]):
                    self._switch()  # the new layer's first packet is a keyframe
                item = self._queue.take() if self._queue is not None else None
                if item is not None and (item.keyframe or not self.keyframes_only):
                    return item
                if item is None:
                    self._wake.clear()
                    await self._wake.wait()
        except QueueClosed:
            self.stop()
            raise MediaStreamError from None

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
        self._drop_pending()
        queue, self._queue = self._queue, None
        if queue is not None and self._unsubscribe is not None:
            self._unsubscribe(queue, _stream_of(self.layer))
        self._wake.set()
        super().stop()

    def stats(self) -> dict[str, object]:
        out: dict[str, object] = {
            "codec": self.codec,
            "layer": self.layer,
            "layer_switches": self.switches,
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
