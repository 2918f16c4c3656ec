"""Per-viewer tracks that carry already-encoded packets.

A :class:`PacketTrack` is what a viewer's sender reads (through ``rtpsend.LeanRtpLoop``): the
shared :class:`EncodedPacket` from the viewer's fan-out queue, already cut into RTP payloads, so
nothing is encoded or packetized per viewer.

A video track subscribes as soon as it is bound (when the answer is made, or at admission),
so that its first keyframe is asked for, encoded and queued while ICE and DTLS connect, and is
the first thing it sends once they are up; until the track has sent its first picture, a
subscription is a *join* (the pupil sees nothing until its keyframe), which the layer's limiter
serves sooner than a repair or a layer switch (agent/media/keyframes.py). Measured with
``python -m bench.burst`` (30 pupils joining within 5 s of Start): DTLS up → first keyframe
took p50 282–380 ms of a 395–552 ms median first picture, mostly waiting for the keyframe;
94–206 ms with joins served sooner and asked for here. If the sender has not started
``EARLY_S`` later (a pupil that never connects), the early queue is dropped and the track
subscribes again, lazily, on the sender's first ``recv()``. Audio always subscribes then.

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

EARLY_S = 1.0
"""How long a video track's early subscription waits for its sender: the fan-out's maximum age
of a packet, so that what it queued meanwhile is still fresh when sent."""
PAUSED = "paused"
KEYFRAMES = "keyframes"
"""Not a layer: the lowest layer's keyframes only."""


def _stream_of(layer: str) -> str:
    """The layer whose stream a track state reads: keyframes-only reads the low layer's."""
    return "low" if layer == KEYFRAMES else layer


Subscribe = Callable[..., ViewerQueue | None]
"""Subscribe to a layer (by name; audio ignores it); a video track adds ``join=True`` while it
has sent no picture yet."""
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
        self._sending = False
        """The sender asked for its first packet (DTLS is up)."""
        self._early: asyncio.TimerHandle | None = None
        """Drops an early subscription whose sender never starts."""
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
        if self.kind == "video" and layer != PAUSED and not self._sending:
            self._subscribe_early()

    def _subscribe_early(self) -> None:
        """Subscribe now (the join's keyframe is made while the pupil connects), for at most
        ``EARLY_S`` without a sender."""
        queue = self._open(_stream_of(self.layer))
        if queue is None:
            return  # no such camera: next_packet finds that out again and sends nothing
        self._queue, self._subscribed = queue, True
        self._early = asyncio.get_running_loop().call_later(EARLY_S, self._drop_early)

    def _drop_early(self) -> None:
        self._early = None
        if self._sending or self.readyState != "live":
            return
        self._drop_pending()
        queue, self._queue = self._queue, None
        if queue is not None and self._unsubscribe is not None:
            self._unsubscribe(queue, _stream_of(self.layer))
        self._subscribed = False
        self.layer = self._wanted

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
        if self.kind == "video" and self.packets_sent == 0:
            queue = self._subscribe(layer, join=True)
        else:
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
        self._sending = True
        if self._early is not None:
            self._early.cancel()
            self._early = None
        if not self._subscribed:
            await self._bound.wait()
        if not self._subscribed:
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
        if self._early is not None:
            self._early.cancel()
            self._early = None
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
