"""One decoding pupil for ``make bench-network``: ``python -m bench.thin_receiver --whep URL``.

An aiortc WHEP receiver (bench/whep_receiver.py) with aiortc's own receive path — NACK, jitter
buffer, PLI, the H.264 decoder — and two checks of ours, so that what it counts is what a pupil
would see:

- a video frame counts only if the decoder returned it (``track.recv()``) and it was complete and
  decodable: every packet from the end of the previous frame to its marker bit arrived, and no
  frame since the last keyframe was lost (:class:`CompleteFramesOnly` drops the rest before the
  decoder, as a browser's frame buffer does, rather than letting FFmpeg conceal the damage),
  and asks for a keyframe (PLI) while it does, as a browser does; it also NACKs a packet that is
  still missing again every 100 ms and gives it up after 1 s (skipping it, asking for a
  keyframe), as browsers do (aiortc NACKs it once, then waits until its buffer overflows);
- audio loss from RTP sequence numbers over the measuring window (what never arrived).

It waits ``--warmup`` seconds after the answer, measures ``--duration`` seconds and prints one
JSON document: per video, decoded frames per second and the longest gap between two decoded
frames (from the window's start to its end); audio loss; the room camera's glass-to-glass
delays (clock code, docs/clock-code.md); whether the kit closed the connection.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aiortc.rtcrtpreceiver
import av
from aiortc.codecs import is_rtx
from aiortc.jitterbuffer import JitterBuffer, JitterFrame

from agent.sources.clockcode import delay_ms, read_clock_code
from agent.webrtc.ice import restrict_host_addresses

from .whep_receiver import WhepError, WhepReceiver, layer_scale, luma_plane

START_CODE = b"\x00\x00\x00\x01"
PLI_INTERVAL_S = 0.5
NACK_AGAIN_S = 0.1
GIVE_UP_S = 1.0
MAX_DRAINED = 64


def is_keyframe(data: bytes) -> bool:
    """An H.264 access unit (Annex B, as aiortc depacketises it) holding an IDR slice; for VP8,
    the frame tag's key-frame bit."""
    if data.startswith(START_CODE) or data.startswith(b"\x00\x00\x01"):
        index = data.find(b"\x00\x00\x01")
        while index != -1 and index + 3 < len(data):
            if data[index + 3] & 0x1F == 5:
                return True
            index = data.find(b"\x00\x00\x01", index + 3)
        return False
    return bool(data) and data[0] & 0x01 == 0


class CompleteFramesOnly(JitterBuffer):
    """aiortc's jitter buffer, handing on a video frame only while the chain since the last
    keyframe is unbroken (``dropped`` counts the frames it held back)."""

    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        super().__init__(capacity, prefetch, is_video)
        self._taken: list[Any] = []
        self._next: int | None = None
        self._intact = False
        self._asked_at = 0.0
        self.dropped = 0

    def add(self, packet: Any) -> tuple[bool, JitterFrame | None]:
        """aiortc's, plus a keyframe request (PLI) while the chain is broken, at most every
        ``PLI_INTERVAL_S``, as a browser's frame buffer asks for one when it cannot decode."""
        pli_flag, frame = super().add(packet)
        if self._is_video and not self._intact and self.dropped:
            now = time.monotonic()
            if now - self._asked_at >= PLI_INTERVAL_S:
                self._asked_at = now
                pli_flag = True
        return pli_flag, frame

    def remove(self, count: int) -> None:
        self._taken = [self._packets[(self._origin + i) % self._capacity] for i in range(count)]  # type: ignore[operator]
        super().remove(count)

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        start = self._origin
        frame = super()._remove_frame(sequence_number)
        if frame is None or not self._is_video:
            return frame
        packets = [p for p in self._taken if p is not None]
        follows = self._next is not None and start == self._next
        self._next = self._origin
        ends = bool(packets) and bool(packets[-1].marker)
        if ends and frame.data.startswith(START_CODE) and is_keyframe(frame.data):
            self._intact = True
        elif not (follows and ends):
            self._intact = False
        if not self._intact:
            self.dropped += 1
            return None
        return frame


AUDIO_ARRIVALS: list[tuple[float, int]] = []
"""(monotonic arrival, RTP sequence number) of every audio packet (one pupil per process)."""

_original_handler = aiortc.rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet


async def _receive_like_a_browser(self: Any, packet: Any, arrival_time_ms: int) -> None:
    """aiortc's handler, then what browsers do and aiortc does not: audio arrivals noted (for
    the loss figure), every complete frame decoded, missing packets NACKed again."""
    if self._track is not None and self._track.kind == "audio":
        AUDIO_ARRIVALS.append((time.monotonic(), packet.sequence_number))
    await _original_handler(self, packet, arrival_time_ms)
    codec = self._RTCRtpReceiver__codecs.get(packet.payload_type)
    if codec is not None and not is_rtx(codec):
        self._media_ssrc = packet.ssrc  # what a NACK is about (not the RTX stream)
        self._media_codec = codec
    if self._track is not None and self._track.kind == "video":
        _drain(self, self.__dict__.get("_media_codec"))
    await _nack_again(self)


def _drain(receiver: Any, codec: Any) -> None:
    """Hand the decoder every frame already complete, not just one per packet received.

    aiortc's jitter buffer gives back at most one frame per packet added, so once frames
    queue behind a lost packet (until its retransmission arrives) a stream of one-packet
    frames (the room camera's 320×180 layer) never catches up: measured, a standing 1–2.6 s
    behind real time at 800 kbit/s, where Chromium showed 151 ms. A browser's frame buffer
    decodes whatever is complete."""
    buffer = receiver._RTCRtpReceiver__jitter_buffer
    if buffer is None or codec is None or not receiver._RTCRtpReceiver__decoder_thread:
        return
    for _ in range(MAX_DRAINED):
        frame = buffer._remove_frame(0)
        if frame is None:
            return
        frame.timestamp = receiver._RTCRtpReceiver__timestamp_mapper.map(frame.timestamp)
        receiver._RTCRtpReceiver__decoder_queue.put((codec, frame))


async def _nack_again(receiver: Any) -> None:
    """NACK what is still missing again every ``NACK_AGAIN_S``, as browsers do (Chromium's
    NackRequester retries every RTT, up to 10 times); aiortc NACKs a packet only when its gap
    first appears, so a lost retransmission stalled its jitter buffer until it overflowed.
    A packet still missing after ``GIVE_UP_S`` is given up, as browsers do: the jitter buffer
    skips past it and a keyframe is asked for (PLI)."""
    nacks = receiver._RTCRtpReceiver__nack_generator
    if nacks is None or not nacks.missing:
        return
    now = time.monotonic()
    if now - receiver.__dict__.get("_nacked_at", 0.0) < NACK_AGAIN_S:
        return
    receiver._nacked_at = now
    ssrc = receiver.__dict__.get("_media_ssrc")
    if ssrc is None:
        return
    since: dict[int, float] = receiver.__dict__.setdefault("_missing_since", {})
    for seq in list(since):
        if seq not in nacks.missing:
            del since[seq]
    for seq in nacks.missing:
        since.setdefault(seq, now)
    stale = [seq for seq, at in since.items() if now - at > GIVE_UP_S]
    if stale and _skip_past(receiver, stale):
        for seq in stale:
            nacks.missing.discard(seq)
            del since[seq]
        await receiver._send_rtcp_pli(ssrc)
    if nacks.missing:
        await receiver._send_rtcp_nack(ssrc, sorted(nacks.missing))


def _skip_past(receiver: Any, lost: list[int]) -> bool:
    """Move the jitter buffer's start past the newest of ``lost`` packets (what it held before
    them is dropped: a frame missing a packet cannot be decoded)."""
    buffer = receiver._RTCRtpReceiver__jitter_buffer
    if buffer is None or buffer._origin is None:
        return False
    origin = buffer._origin
    ahead = [(seq - origin) & 0xFFFF for seq in lost]
    within = [delta for delta in ahead if delta < buffer.capacity]
    if within:
        buffer.remove(max(within) + 1)
    return True


def install() -> None:
    """Our checks on every aiortc receiver of this process."""
    aiortc.rtcrtpreceiver.JitterBuffer = CompleteFramesOnly  # type: ignore[attr-defined,misc]
    aiortc.rtcrtpreceiver.RTCRtpReceiver._handle_rtp_packet = _receive_like_a_browser  # type: ignore[method-assign]


def audio_loss_percent(arrivals: list[tuple[float, int]], since: float, until: float) -> float:
    """Packets lost in [since, until): sequence numbers past the highest seen before ``since``,
    up to the highest seen by ``until``, that never arrived (100 when nothing arrived)."""
    extended: list[tuple[float, int]] = []
    last: int | None = None
    for at, seq in arrivals:
        value = seq if last is None else last + ((seq - last + 0x8000) % 0x10000 - 0x8000)
        extended.append((at, value))
        last = value if last is None or value > last else last
    before = [v for at, v in extended if at < since]
    inside = {v for at, v in extended if since <= at < until}
    if not inside:
        return 100.0
    low = max(before) if before else min(inside) - 1
    high = max(inside)
    expected = high - low
    got = len({v for v in inside if v > low})
    return round(max(0.0, 1 - got / expected) * 100, 1) if expected > 0 else 0.0


def longest_gap(arrivals: list[float], since: float, until: float) -> float:
    """Longest time without a decoded frame in [since, until], its edges included."""
    points = [since, *(t for t in arrivals if since <= t <= until), until]
    return round(max(b - a for a, b in itertools.pairwise(points)), 2)


@dataclass
class Watch:
    arrivals: dict[str, list[float]] = field(default_factory=dict)
    delays: list[tuple[float, int]] = field(default_factory=list)
    sizes: dict[str, str] = field(default_factory=dict)

    def on_video(self, name: str, frame: av.VideoFrame, now: float) -> None:
        wall_ms = int(time.time() * 1000)
        self.arrivals.setdefault(name, []).append(now)
        self.sizes[name] = f"{frame.width}×{frame.height}"
        if name == "camera":
            code = read_clock_code(luma_plane(frame), layer_scale(name, frame))
            if code is not None:
                self.delays.append((now, delay_ms(code, wall_ms)))


async def run(whep_url: str, warmup: float, duration: float) -> dict[str, Any]:
    watch = Watch()
    receiver = WhepReceiver(whep_url, on_video=watch.on_video)
    closed_by_kit: list[str] = []
    receiver.pc.on(
        "connectionstatechange",
        lambda: (
            closed_by_kit.append(receiver.pc.connectionState)
            if receiver.pc.connectionState in ("failed", "closed")
            else None
        ),
    )
    try:
        await receiver.connect(timeout=15.0)
    except (WhepError, aiohttp.ClientError, OSError, TimeoutError) as exc:
        return {"error": str(exc)}
    await asyncio.sleep(warmup)
    since = time.monotonic()
    await asyncio.sleep(duration)
    until = time.monotonic()
    kit_closed = bool(closed_by_kit)
    buffers = [
        t.receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        for t in receiver.pc.getTransceivers()
        if t.kind == "video"
    ]
    await receiver.close()
    out: dict[str, Any] = {"kit_closed": kit_closed, "seconds": round(until - since, 1)}
    for name in ("camera", "document"):
        times = watch.arrivals.get(name, [])
        frames = sum(1 for t in times if since <= t < until)
        out[name] = {
            "fps": round(frames / (until - since), 2),
            "freeze_s": longest_gap(times, since, until),
            "size": watch.sizes.get(name, "") if frames else "",
        }
    out["held_back"] = sum(getattr(b, "dropped", 0) for b in buffers)
    out["audio_loss"] = audio_loss_percent(AUDIO_ARRIVALS, since, until)
    out["delays_ms"] = [d for at, d in watch.delays if since <= at < until]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.thin_receiver")
    parser.add_argument("--whep", required=True)
    parser.add_argument("--address", required=True, help="this pupil's address (ICE host)")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=20.0)
    args = parser.parse_args()
    restrict_host_addresses([args.address])
    install()
    result = asyncio.run(run(args.whep, args.warmup, args.duration))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
