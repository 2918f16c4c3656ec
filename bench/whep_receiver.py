"""A WHEP receiver built on aiortc: what the tests and the benchmark use as a pupil.

``WhepReceiver`` posts an offer for two videos and one audio, applies the answer and counts what
arrives per track (by msid track id: ``camera``, ``document``, ``microphone``). With
``decode=True`` video frames are decoded and the clock code is read back for glass-to-glass
delay; with ``decode=False`` (see :func:`use_counting_decoder`) the receiver only reassembles
frames, so that many receivers fit beside the agent on a small machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aiortc.rtcrtpreceiver
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpreceiver import StreamStatistics
from yarl import URL

from agent.sources.clockcode import delay_ms, read_clock_code


@dataclass(frozen=True, slots=True)
class CountedFrame:
    """What the counting path hands to the track instead of a decoded frame."""

    size: int


class _FrameCounter:
    """Per-SSRC frame boundaries from RTP marker bits, with a flag for sequence gaps."""

    __slots__ = ("expected", "gap", "size", "statistics")

    def __init__(self) -> None:
        self.statistics: Any = None
        self.expected: int | None = None
        self.gap = False
        self.size = 0


async def _count_rtp_packet(self: Any, packet: Any, arrival_time_ms: int) -> None:
    """Replaces ``RTCRtpReceiver._handle_rtp_packet`` in counting mode.

    aiortc's own handler runs NACK, bitrate estimation, a jitter buffer and a decoder thread per
    track; 90 tracks of that do not fit beside the agent on two cores. This keeps aiortc's ICE,
    DTLS and SRTP (everything up to here) and counts a frame at each marker bit; a frame with a
    sequence gap is counted in ``TrackStats.incomplete`` instead. It keeps aiortc's receiver
    statistics too, so the kit gets receiver reports (loss, RTT) as from any browser: its
    bandwidth estimate and layer choice need them.
    """
    counters = self.__dict__.setdefault("_counters", {})
    counter = counters.get(packet.ssrc)
    if counter is None:
        codec = self._RTCRtpReceiver__codecs.get(packet.payload_type)
        if codec is None:
            return
        counter = counters[packet.ssrc] = _FrameCounter()
        streams = self._RTCRtpReceiver__remote_streams
        counter.statistics = streams.setdefault(packet.ssrc, StreamStatistics(codec.clockRate))
    counter.statistics.add(packet)  # receiver reports, as every browser sends them
    if counter.expected is not None and packet.sequence_number != counter.expected:
        counter.gap = True
    counter.expected = (packet.sequence_number + 1) & 0xFFFF
    counter.size += len(packet.payload)
    if packet.marker or self._track.kind == "audio":
        frame = CountedFrame(counter.size) if not counter.gap else IncompleteFrame(counter.size)
        counter.size, counter.gap = 0, False
        self._track._queue.put_nowait(frame)


@dataclass(frozen=True, slots=True)
class IncompleteFrame:
    size: int


def use_counting_decoder() -> None:
    """Make every aiortc receiver in this process count frames instead of decoding them."""
    aiortc.rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet = _count_rtp_packet  # type: ignore[method-assign]


SOURCE_WIDTHS = {"camera": 1280, "document": 1920}
"""The synthetic sources' widths (the agent's defaults, docs/clock-code.md)."""


def layer_scale(track: str, frame: av.VideoFrame) -> float:
    """How a lower quality layer of ``track`` is scaled from the captured picture, for
    ``read_clock_code`` (1.0 on the top layer)."""
    return min(1.0, frame.width / SOURCE_WIDTHS.get(track, frame.width))


def route_rtx(pc: RTCPeerConnection) -> None:
    """Route each video's RTX stream (retransmissions, probe padding) to its receiver.

    aiortc 1.16 routes an RTP packet by SSRC, or by payload type when only one receiver has
    it, and registers only the media SSRCs: with the room and the document cameras bundled
    (the same RTX payload type on both m-lines) every RTX packet was dropped, so an aiortc
    pupil never got a retransmission and stalled on each lost packet until its jitter buffer
    overflowed (seconds). Browsers route by the ``ssrc-group:FID`` of the answer, as here."""
    description = aiortc_sdp.SessionDescription.parse(pc.remoteDescription.sdp)
    by_mid = {t.mid: t for t in pc.getTransceivers()}
    for media in description.media:
        transceiver = by_mid.get(media.rtp.muxId)
        if transceiver is None or transceiver.receiver.transport is None:
            continue
        router = transceiver.receiver.transport._rtp_router
        for group in media.ssrc_group:
            if group.semantic == "FID" and len(group.items) == 2:
                router.ssrc_table[int(group.items[1])] = transceiver.receiver


def enlarge_receive_buffers(pc: RTCPeerConnection, size: int = 8 << 20) -> None:
    """Give each ICE socket a large receive buffer (root only: SO_RCVBUFFORCE), so that many
    receivers in one process do not lose bursts while their event loop is busy."""
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        for pair in dtls.transport._connection._check_list if dtls else []:
            transport = getattr(pair.protocol, "transport", None)
            sock = transport.get_extra_info("socket") if transport else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)


SO_RCVBUFFORCE = 33


def luma_plane(frame: av.VideoFrame) -> Any:
    """The decoded Y plane as a (height, width) view, without a colour conversion."""
    plane = frame.planes[0]
    rows = np.frombuffer(memoryview(plane), np.uint8).reshape(frame.height, plane.line_size)
    return rows[:, : frame.width]


@dataclass
class TrackStats:
    kind: str
    frames: int = 0
    bytes: int = 0
    first_at: float | None = None
    arrivals: list[float] = field(default_factory=list)
    delays_ms: list[int] = field(default_factory=list)
    energy: float = 0.0
    incomplete: int = 0

    def fps(self, since: float, until: float) -> float:
        n = sum(1 for t in self.arrivals if since <= t < until)
        return n / (until - since) if until > since else 0.0

    def bitrate_kbps(self, seconds: float) -> float:
        return self.bytes * 8 / 1000 / seconds if seconds > 0 else 0.0


async def post_offer(
    session: aiohttp.ClientSession, pc: RTCPeerConnection, whep_url: str, timeout: float
) -> str:
    """WHEP: ``pc``'s offer POSTed, the answer set; returns the session's resource URL
    (raises :class:`WhepError` on a refusal)."""
    await pc.setLocalDescription(await pc.createOffer())
    async with session.post(
        whep_url,
        data=pc.localDescription.sdp.encode(),
        headers={"Content-Type": "application/sdp"},
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as response:
        body = await response.text()
        if response.status != 201:
            raise WhepError(response.status, body)
        location = str(response.url.join(URL(response.headers["Location"])))
    await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))
    return location


class WhepError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"WHEP POST answered {status}: {body[:200]}")
        self.status = status
        self.body = body


class WhepReceiver:
    """One pupil: a peer connection negotiated through WHEP."""

    KINDS = ("video", "video", "audio")
    TRACK_NAMES = ("camera", "document", "microphone")

    def __init__(
        self,
        whep_url: str,
        read_clock: bool = False,
        data_channel: bool = False,
        on_video: Callable[[str, av.VideoFrame, float], None] | None = None,
    ) -> None:
        self.whep_url = whep_url
        self.read_clock = read_clock
        self.on_video = on_video
        """Called with (track name, decoded frame, monotonic arrival) for every video frame."""
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel: Any = self.pc.createDataChannel("classroom") if data_channel else None
        self.messages: list[Any] = []
        """What the kit sent on the pupil data channel, JSON-decoded, in order."""
        if self.channel is not None:
            self.channel.on("message", lambda data: self.messages.append(json.loads(data)))
        self.tracks: dict[str, TrackStats] = {}
        self.location: str | None = None
        self.posted_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def connect(self, timeout: float = 10.0) -> None:
        self._add_transceivers()
        self.pc.on("track", self._on_track)
        self._session = aiohttp.ClientSession()
        self.posted_at = time.monotonic()
        self.location = await post_offer(self._session, self.pc, self.whep_url, timeout)
        route_rtx(self.pc)
        enlarge_receive_buffers(self.pc)

    def _add_transceivers(self) -> None:
        """The offer's m-lines: room camera, document camera, sound, all receive-only."""
        for kind in self.KINDS:
            self.pc.addTransceiver(kind, direction="recvonly")

    def _on_track(self, track: MediaStreamTrack) -> None:
        stats = TrackStats(track.kind)
        self.tracks[self._name(track)] = stats
        self._tasks.append(asyncio.ensure_future(self._consume(track, stats)))

    def _name(self, track: MediaStreamTrack) -> str:
        """The agent's msid track id; for other servers, the name of the m-line's position."""
        if track.id in self.TRACK_NAMES:
            return track.id
        for index, transceiver in enumerate(self.pc.getTransceivers()):
            if transceiver.receiver.track is track and index < len(self.TRACK_NAMES):
                return self.TRACK_NAMES[index]
        return track.id

    async def _consume(self, track: MediaStreamTrack, stats: TrackStats) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            wall_ms = int(time.time() * 1000)  # arrival, before any work of ours
            if stats.first_at is None:
                stats.first_at = now
            stats.frames += 1
            stats.arrivals.append(now)
            if isinstance(frame, CountedFrame | IncompleteFrame):  # type: ignore[unreachable]
                stats.bytes += frame.size
                if isinstance(frame, IncompleteFrame):
                    stats.incomplete += 1
            elif isinstance(frame, av.VideoFrame):
                if self.on_video is not None:
                    self.on_video(self._name(track), frame, now)
                if self.read_clock:
                    code = read_clock_code(luma_plane(frame), layer_scale(self._name(track), frame))
                    if code is not None:
                        stats.delays_ms.append(delay_ms(code, wall_ms))
            elif isinstance(frame, av.AudioFrame):
                samples = frame.to_ndarray().astype("float32")
                stats.energy += float((samples**2).mean())

    async def wait_frames(self, track_id: str, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.tracks.get(track_id)
            if stats is not None and stats.frames >= count:
                return
            await asyncio.sleep(0.05)
        got = self.tracks[track_id].frames if track_id in self.tracks else 0
        raise TimeoutError(f"{track_id}: {got} frames of {count} after {timeout} s")

    async def close(self, delete: bool = True) -> None:
        if delete and self.location and self._session is not None:
            try:
                async with self._session.delete(self.location) as response:
                    await response.read()
            except aiohttp.ClientError:
                pass
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
