"""Shared encoders: one thread per (source, codec), off the event loop.

A device thread hands every new picture to :meth:`VideoEncoder.offer`, which keeps only the
newest one (a slow encode never makes a queue of stale pictures). The encoder thread encodes
it and hands the packet to the event loop with ``call_soon_threadsafe``, where the fan-out
gives the same packet to every viewer. Keyframe requests (joins, PLI/FIR, resyncs) set a flag
the thread reads before its next frame.

Measured on the 2-core dev machine (noisy 720p30 and 1080p15 cards, 2 Mbps, one thread):
libx264 ultrafast ≈ 7.5 ms/12 ms CPU per frame, superfast ≈ 10/17 ms, veryfast ≈ 15/32 ms.
The default preset is ``ultrafast`` with one thread per source: ≈ 42 % of one core for both
cameras, and the document card's smallest text stays legible (same PSNR as superfast).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.video.frame
import cv2
import numpy as np

from ..clock import AUDIO_RATE, AUDIO_TIME_BASE, VIDEO_RATE, VIDEO_TIME_BASE, MediaClock
from ..errors import EncoderError
from ..sources.base import AUDIO_BLOCK_SAMPLES, RawAudioBlock, RawVideoFrame
from .packets import AvPacket, EncodedPacket

log = logging.getLogger("agent.media")

Publish = Callable[[EncodedPacket], None]
Packer = Callable[[AvPacket], tuple[tuple[bytes, ...], int]]
"""Cuts a packet into transport payloads on the encoder thread (see agent/webrtc/packetize)."""


@dataclass(frozen=True, slots=True)
class VideoEncoderSettings:
    codec: str  # "h264" or "vp8"
    width: int
    height: int
    fps: int
    bitrate_kbps: int
    keyframe_interval_s: float = 2.0
    h264_preset: str = "ultrafast"
    threads: int = 1
    rate_buffer_s: float = 0.5
    """The rate buffer (VBV) in seconds of the bitrate: the largest a frame may be."""
    layer: str = "high"
    source_fps: int = 0
    """The camera's frame rate; above ``fps``, pictures are thinned (0: the same as fps)."""
    """The quality layer it encodes (agent/media/layers.py); the picture is scaled to
    ``width``×``height`` and thinned to ``fps`` here when the camera's differ."""


VP8_CPU_USED = 16
"""libvpx's speed in realtime mode (VP8: 0–16, 16 the fastest). Measured on the dev machine,
one thread, synthetic cards at 2 Mbit/s (``python -m bench.vp8``): per frame, 720p30 13.3 ms of
CPU at 8 against 5.2 at 16, 1080p15 19.6 against 10.5; the luma PSNR of the P-frames stays
within 0.1 dB (37.2 dB and 36.7 dB at both speeds), and within 0.6 dB on the room camera's mid
layer. libx264 ultrafast takes 3.5 and 7.0 ms there. Below 16 libvpx picks its speed from how
long its last encodes took against the frame interval, so what speed 8 cost depended on the
machine's load (5.8 ms per 720p frame on a busy one, 13.5 on a quiet one); at 16 it is always
the fastest."""
VP8_STILL_CPU_USED = -8
"""The speed of a layer of at most ``STILL_FPS`` (the document camera's low layer, 1280×720 at
6 fps): a page of text, where the fastest speed's motion search fails. Its P-frames came out at
29.2 dB at 16 against 36.8 at this fixed speed 8 (negative: libvpx does not adapt it), for
5.1 ms a frame instead of 4.4: 3 % of a core at 6 fps."""
STILL_FPS = 10


def vp8_options(settings: VideoEncoderSettings) -> dict[str, str]:
    """libvpx's options for one layer: realtime speed, no look-ahead, and a constant bitrate
    held by a rate buffer of ``rate_buffer_s``, as the H.264 encoder's VBV.

    Before (variable bitrate, no buffer, cpu-used 8) the 1080p15 card came out at 2.16 Mbit/s
    for 2.0 set (2.21 with a keyframe forced every second; 2.1–2.8 measured in a class); with
    ``minrate = maxrate = bitrate`` (FFmpeg then sets libvpx's CBR end usage) and the buffer,
    2.00 (2.02). A keyframe may be as large as the buffer (``max-intra-rate``, in % of an
    average frame), like the H.264 path's VBV: 1,500 % at 30 fps and 0.5 s (Chrome's WebRTC
    uses ~900 %); the document's low layer (6 fps, 2 s buffer) keeps its sharp keyframes."""
    kbps = settings.bitrate_kbps
    buffer_kbits = max(1, int(kbps * settings.rate_buffer_s))
    intra_pct = max(300, int(settings.rate_buffer_s * settings.fps * 100))
    return {
        "deadline": "realtime",
        "cpu-used": str(VP8_STILL_CPU_USED if settings.fps <= STILL_FPS else VP8_CPU_USED),
        "lag-in-frames": "0",
        "error-resilient": "1",
        "auto-alt-ref": "0",
        "static-thresh": "0",
        "noise-sensitivity": "0",
        "minrate": f"{kbps}k",
        "maxrate": f"{kbps}k",
        "bufsize": f"{buffer_kbits}k",
        "undershoot-pct": "50",
        "overshoot-pct": "10",
        "max-intra-rate": str(intra_pct),
    }


def open_video_codec(settings: VideoEncoderSettings) -> av.CodecContext:
    """A configured low-latency encoder context (H.264 constrained baseline, or VP8 realtime)."""
    gop = max(1, int(settings.fps * settings.keyframe_interval_s))
    kbps = settings.bitrate_kbps
    buffer_kbits = max(1, int(kbps * settings.rate_buffer_s))
    try:
        if settings.codec == "h264":
            ctx = av.CodecContext.create("libx264", "w")
            ctx.options = {
                "preset": settings.h264_preset,
                "tune": "zerolatency",
                "profile": "baseline",
                "forced-idr": "1",
                "x264-params": (
                    f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:repeat-headers=1"
                    f":vbv-maxrate={kbps}:vbv-bufsize={buffer_kbits}"
                ),
            }
        elif settings.codec == "vp8":
            ctx = av.CodecContext.create("libvpx", "w")
            ctx.gop_size = gop
            ctx.options = vp8_options(settings)
        else:
            raise EncoderError(f"unsupported video codec {settings.codec!r}")
        ctx.width = settings.width
        ctx.height = settings.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = VIDEO_TIME_BASE
        ctx.framerate = Fraction(settings.fps, 1)
        ctx.bit_rate = kbps * 1000
        ctx.thread_count = settings.threads
        ctx.open()
    except (av.FFmpegError, ValueError) as exc:
        raise EncoderError(f"cannot open {settings.codec} encoder: {exc}") from exc
    return ctx


class _EncoderThread:
    """Shared thread plumbing: start, stop, hand packets to the loop, count what happened."""

    def __init__(
        self, name: str, loop: asyncio.AbstractEventLoop, publish: Publish, pack: Packer | None
    ) -> None:
        self.name = name
        self._loop = loop
        self._publish = publish
        self._pack = pack
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self.frames_encoded = 0
        self.bytes_out = 0
        self.keyframes = 0
        self.errors = 0
        self._encode_seconds = 0.0
        self._cpu_seconds = 0.0
        """CPU time of this thread in its encodes (``time.thread_time``): what the encoder
        really costs, whatever the other threads do to its wall time."""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_guarded, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Blocking: ends the thread (call through ``asyncio.to_thread``)."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("encoder %s stopped on an unexpected error", self.name)

    def _run(self) -> None:
        raise NotImplementedError

    def _emit(self, packet: AvPacket, keyframe: bool, capture_time: float) -> None:
        payloads: tuple[bytes, ...] = ()
        rtp_timestamp = 0
        if self._pack is not None:
            payloads, rtp_timestamp = self._pack(packet)
        item = EncodedPacket(packet, keyframe, capture_time, packet.size, payloads, rtp_timestamp)
        self.frames_encoded += 1
        self.bytes_out += item.size
        self.keyframes += keyframe
        try:
            self._loop.call_soon_threadsafe(self._publish, item)
        except RuntimeError:  # loop closed during shutdown
            self._stop.set()

    def base_stats(self) -> dict[str, Any]:
        done = max(1, self.frames_encoded)
        return {
            "name": self.name,
            "frames": self.frames_encoded,
            "keyframes": self.keyframes,
            "bytes": self.bytes_out,
            "errors": self.errors,
            "encode_ms_avg": round(self._encode_seconds / done * 1000, 2),
            "cpu_s": round(self._cpu_seconds, 3),
        }


def scaled(raw: RawVideoFrame, width: int, height: int) -> av.VideoFrame:
    """``raw`` as a frame of ``width``×``height`` (a quality layer, agent/media/layers.py).

    Measured per 1280×720 picture on the dev machine: an exact halving by OpenCV's area
    filter on the numpy planes, then a frame of the small picture, 0.16 ms, against 0.64 ms
    for a frame of the whole picture then libswscale (which wins elsewhere: 1280×720 →
    320×180 0.21 ms against OpenCV's 0.49, 1920×1080 → 1280×720 0.66 against 2.6)."""
    if raw.width == width and raw.height == height:
        return av.VideoFrame.from_ndarray(raw.data, format="yuv420p")
    if raw.width == 2 * width and raw.height == 2 * height:
        return av.VideoFrame.from_ndarray(
            _halved(raw.data, raw.width, raw.height), format="yuv420p"
        )
    frame = av.VideoFrame.from_ndarray(raw.data, format="yuv420p")
    return frame.reformat(width=width, height=height)


def _halved(data: np.ndarray, width: int, height: int) -> np.ndarray:
    """An I420 picture (``(h * 3 // 2, w)`` rows) at half its size, each plane area-averaged."""
    out = np.empty((height * 3 // 4, width // 2), np.uint8)
    half_w, half_h = width // 2, height // 2
    cv2.resize(data[:height], (half_w, half_h), dst=out[:half_h], interpolation=cv2.INTER_AREA)
    chroma = data[height:].reshape(2, half_h, half_w)
    small = out[half_h:].reshape(2, half_h // 2, half_w // 2)
    for plane in range(2):
        cv2.resize(
            chroma[plane],
            (half_w // 2, half_h // 2),
            dst=small[plane],
            interpolation=cv2.INTER_AREA,
        )
    return out


class VideoEncoder(_EncoderThread):
    """Encodes the newest picture of one source for every viewer of one codec."""

    def __init__(
        self,
        source_id: str,
        settings: VideoEncoderSettings,
        clock: MediaClock,
        loop: asyncio.AbstractEventLoop,
        publish: Publish,
        pack: Packer | None = None,
    ) -> None:
        name = f"encode-{source_id}-{settings.codec}-{settings.layer}"
        super().__init__(name, loop, publish, pack)
        if settings.codec not in ("h264", "vp8"):
            raise EncoderError(f"unsupported video codec {settings.codec!r}")
        self.source_id = source_id
        self.settings = settings
        self._clock = clock
        self._ctx: av.CodecContext | None = None
        """Opened on the encoder's own thread (:meth:`_run`): libvpx takes 40 ms to open at
        1080p, 19 ms at 720p (libx264 3 ms), which on the event loop held every pupil's packets
        back each time a Firefox pupil's layer started."""
        self._latest: RawVideoFrame | None = None
        self._force_keyframe = False
        self._last_pts = -1
        self._due: float | None = None
        self.frames_in = 0
        self.frames_thinned = 0
        """Pictures left out to keep to the layer's frame rate."""
        self.frames_skipped = 0
        self.forced_keyframes = 0

    def offer(self, frame: RawVideoFrame) -> None:
        """Thread-safe, non-blocking: replace the pending picture with this newer one."""
        with self._wake:
            if self._latest is not None:
                self.frames_skipped += 1
            self._latest = frame
            self.frames_in += 1
            self._wake.notify()

    def request_keyframe(self) -> None:
        """Thread-safe: the next encoded picture is an IDR/key frame."""
        self._force_keyframe = True

    def _next_frame(self) -> RawVideoFrame | None:
        with self._wake:
            while self._latest is None and not self._stop.is_set():
                self._wake.wait(0.5)
            frame, self._latest = self._latest, None
            return frame

    def _run(self) -> None:
        try:
            self._open()
        except EncoderError as exc:
            self.errors += 1
            log.error("%s: no pictures from this encoder: %s", self.name, exc)
            return
        while not self._stop.is_set():
            raw = self._next_frame()
            if raw is None:
                continue
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                self._encode(raw)
            except (av.FFmpegError, ValueError) as exc:
                self.errors += 1
                log.warning("%s: frame dropped, encoder error: %s", self.name, exc)
            self._encode_seconds += time.perf_counter() - started
            self._cpu_seconds += time.thread_time() - cpu

    def _open(self) -> av.CodecContext:
        """The codec context, opened on first use (on the encoder's thread: see ``_ctx``)."""
        if self._ctx is None:
            self._ctx = open_video_codec(self.settings)
        return self._ctx

    def _wanted(self, capture_time: float) -> bool:
        """Whether this picture keeps the layer's frame rate (30 → 20 fps keeps 2 in 3): the
        next one is due a frame interval after the last, with 30 % of an interval's grace."""
        if self.settings.fps >= self.settings.source_fps:
            return True
        interval = 1.0 / self.settings.fps
        if self._due is not None and capture_time < self._due - 0.3 * interval:
            return False
        if self._due is None or capture_time - self._due > interval:
            self._due = capture_time + interval  # first picture, or after a gap
        else:
            self._due += interval
        return True

    def _encode(self, raw: RawVideoFrame) -> None:
        if not self._wanted(raw.capture_time) and not self._force_keyframe:
            self.frames_thinned += 1
            return
        frame = scaled(raw, self.settings.width, self.settings.height)
        pts = max(self._clock.pts(raw.capture_time, VIDEO_RATE), self._last_pts + 1)
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        if self._force_keyframe:
            self._force_keyframe = False
            self.forced_keyframes += 1
            frame.pict_type = av.video.frame.PictureType.I
        for packet in self._open().encode(frame):  # type: ignore[attr-defined]
            if packet.time_base is None:
                packet.time_base = VIDEO_TIME_BASE
            self._emit(packet, bool(packet.is_keyframe), raw.capture_time)

    def stats(self) -> dict[str, Any]:
        return {
            **self.base_stats(),
            "source": self.source_id,
            "codec": self.settings.codec,
            "width": self.settings.width,
            "height": self.settings.height,
            "fps": self.settings.fps,
            "bitrate_kbps": self.settings.bitrate_kbps,
            "frames_in": self.frames_in,
            "frames_skipped": self.frames_skipped,
            "frames_thinned": self.frames_thinned,
            "forced_keyframes": self.forced_keyframes,
            "layer": self.settings.layer,
        }


class AudioEncoder(_EncoderThread):
    """Opus, 20 ms packets, for every viewer. Timestamps follow the media clock."""

    def __init__(
        self,
        bitrate_kbps: int,
        clock: MediaClock,
        loop: asyncio.AbstractEventLoop,
        publish: Publish,
        pack: Packer | None = None,
    ) -> None:
        super().__init__("encode-microphone-opus", loop, publish, pack)
        self._clock = clock
        self._blocks: deque[RawAudioBlock] = deque(maxlen=25)  # 500 ms: older audio is stale
        self._next_pts: int | None = None
        self.bitrate_kbps = bitrate_kbps
        try:
            self._ctx = av.CodecContext.create("libopus", "w")
            self._ctx.sample_rate = AUDIO_RATE
            self._ctx.layout = "mono"
            self._ctx.format = "s16"
            self._ctx.bit_rate = bitrate_kbps * 1000
            self._ctx.time_base = AUDIO_TIME_BASE
            self._ctx.options = {"application": "voip", "frame_duration": "20"}
            self._ctx.open()
        except (av.FFmpegError, ValueError) as exc:
            raise EncoderError(f"cannot open Opus encoder: {exc}") from exc

    def offer(self, block: RawAudioBlock) -> None:
        """Thread-safe, non-blocking (the oldest block goes if 500 ms are already waiting)."""
        with self._wake:
            self._blocks.append(block)
            self._wake.notify()

    def _next_block(self) -> RawAudioBlock | None:
        with self._wake:
            while not self._blocks and not self._stop.is_set():
                self._wake.wait(0.5)
            return self._blocks.popleft() if self._blocks else None

    def _run(self) -> None:
        while not self._stop.is_set():
            block = self._next_block()
            if block is None:
                continue
            started = time.perf_counter()
            try:
                self._encode(block)
            except (av.FFmpegError, ValueError) as exc:
                self.errors += 1
                log.warning("%s: block dropped, encoder error: %s", self.name, exc)
            self._encode_seconds += time.perf_counter() - started

    def _pts_for(self, block: RawAudioBlock) -> int:
        """Contiguous sample counts, re-anchored on the clock if the device drifts > 1 block."""
        clock_pts = self._clock.pts(block.capture_time, AUDIO_RATE)
        if self._next_pts is None or abs(clock_pts - self._next_pts) > AUDIO_BLOCK_SAMPLES:
            self._next_pts = clock_pts
        pts = self._next_pts
        self._next_pts = pts + AUDIO_BLOCK_SAMPLES
        return pts

    def _encode(self, block: RawAudioBlock) -> None:
        frame = av.AudioFrame.from_ndarray(
            block.samples.reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts = self._pts_for(block)
        frame.time_base = AUDIO_TIME_BASE
        for packet in self._ctx.encode(frame):
            if packet.time_base is None:
                packet.time_base = AUDIO_TIME_BASE
            self._emit(packet, True, block.capture_time)

    def stats(self) -> dict[str, Any]:
        return {
            **self.base_stats(),
            "source": "microphone",
            "codec": "opus",
            "bitrate_kbps": self.bitrate_kbps,
        }
