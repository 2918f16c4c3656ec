"""``python -m bench.vp8``: what one frame costs each video encoder, and the bitrate it keeps.

Encodes layers of the synthetic cards (room 1280×720 at 30 fps, document 1920×1080 at 15 fps,
2 Mbit/s; agent/media/layers.py) through ``agent.media.encoder.open_video_codec`` — the
settings the agent uses — and through the VP8 settings the agent had before issue 18
(``BEFORE``), one thread, on this thread. Per frame: the median CPU time (``time.thread_time``
around the encode, the picture is rendered and scaled outside it); the bitrate over the
seconds after the first (rate control warmed up), with no forced keyframe and with one forced
every second (pupils joining, PLIs); the decoded P-frames' luma PSNR. About 20 s.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from dataclasses import dataclass
from fractions import Fraction

import av
import av.video.frame
import numpy as np

from agent.clock import VIDEO_TIME_BASE
from agent.config import VideoSourceConfig
from agent.media.encoder import VideoEncoderSettings, open_video_codec, scaled
from agent.media.layers import layers_of
from agent.sources.base import RawVideoFrame
from agent.sources.synthetic import SyntheticCamera, SyntheticDocument

BEFORE = {
    "deadline": "realtime",
    "cpu-used": "8",
    "lag-in-frames": "0",
    "error-resilient": "1",
    "auto-alt-ref": "0",
    "static-thresh": "0",
    "undershoot-pct": "95",
    "max-intra-rate": "300",
}
"""The agent's VP8 options before issue 18 (variable bitrate, speed 8)."""
CARDS = (("camera", 1280, 720, 30), ("document", 1920, 1080, 15))


@dataclass(frozen=True, slots=True)
class EncodeResult:
    cpu_ms: float
    """Median CPU per frame, after the first second."""
    kbps: float
    """Bitrate after the first second."""
    psnr_db: float | None = None
    """Median luma PSNR of the decoded P-frames after the first second (with ``quality``)."""


def _before(settings: VideoEncoderSettings) -> av.CodecContext:
    ctx = av.CodecContext.create("libvpx", "w")
    ctx.gop_size = int(settings.fps * settings.keyframe_interval_s)
    ctx.options = dict(BEFORE)
    ctx.width, ctx.height, ctx.pix_fmt = settings.width, settings.height, "yuv420p"
    ctx.time_base = VIDEO_TIME_BASE
    ctx.framerate = Fraction(settings.fps, 1)
    ctx.bit_rate = settings.bitrate_kbps * 1000
    ctx.thread_count = settings.threads
    ctx.open()
    return ctx


def layer_settings(codec: str, source: str, layer: str) -> tuple[VideoEncoderSettings, int]:
    """The agent's encoder settings for ``layer`` of the ``source`` card, and the card's fps."""
    _, width, height, fps = next(card for card in CARDS if card[0] == source)
    config = VideoSourceConfig(width=width, height=height, fps=fps, bitrate_kbps=2000)
    chosen = next(item for item in layers_of(source, config) if item.name == layer)
    settings = VideoEncoderSettings(
        codec,
        chosen.width,
        chosen.height,
        chosen.fps,
        chosen.bitrate_kbps,
        keyframe_interval_s=chosen.keyframe_interval_s or 2.0,
        rate_buffer_s=chosen.rate_buffer_s,
        layer=layer,
        source_fps=fps,
    )
    return settings, fps


def _psnr(decoded: av.VideoFrame, original: np.ndarray) -> float:
    luma = decoded.to_ndarray()[: decoded.height].astype(np.float32)
    mse = float(np.mean((luma - original.astype(np.float32)) ** 2))
    return 10 * math.log10(255**2 / max(mse, 1e-6))


def encode_card(
    codec: str,
    source: str,
    seconds: float,
    force_every_s: float = 0.0,
    before: bool = False,
    layer: str = "high",
    quality: bool = False,
) -> EncodeResult:
    """Encode ``seconds`` of ``layer`` of the ``source`` card with ``codec`` (the agent's
    settings, or the old VP8 ones with ``before``), a keyframe forced every ``force_every_s``
    (0: none); with ``quality``, decode it and measure the P-frames' PSNR."""
    settings, card_fps = layer_settings(codec, source, layer)
    fps = settings.fps
    ctx = _before(settings) if before else open_video_codec(settings)
    decoder = av.CodecContext.create(codec, "r") if quality else None
    card = (SyntheticCamera if source == "camera" else SyntheticDocument)()
    frames, force, step = int(seconds * fps), int(force_every_s * fps), card_fps // fps
    cpu: list[float] = []
    psnr: list[float] = []
    sent = 0
    for n in range(frames):
        raw = RawVideoFrame(card.render(n * step, 0), card.width, card.height, 0.0)
        frame = scaled(raw, settings.width, settings.height)
        frame.pts = n * 90_000 // fps
        frame.time_base = VIDEO_TIME_BASE
        if force and n % force == 0:
            frame.pict_type = av.video.frame.PictureType.I
        started = time.thread_time()
        packets = ctx.encode(frame)  # type: ignore[attr-defined]
        spent = time.thread_time() - started
        warmed = n >= fps
        if warmed:
            cpu.append(spent)
            sent += sum(packet.size for packet in packets)
        if decoder is not None:
            original = frame.to_ndarray()[: settings.height]
            for packet in packets:
                for decoded in decoder.decode(packet):  # type: ignore[attr-defined]
                    if warmed and not packet.is_keyframe:
                        psnr.append(_psnr(decoded, original))
    measured_s = (frames - fps) / fps
    return EncodeResult(
        round(statistics.median(cpu) * 1000, 2),
        round(sent * 8 / 1000 / measured_s, 0),
        round(statistics.median(psnr), 1) if psnr else None,
    )


ROWS = (
    ("H.264 (libx264 ultrafast)", "h264", False),
    ("VP8 before issue 18 (speed 8, variable bitrate)", "vp8", True),
    ("VP8 now (constant bitrate, rate buffer)", "vp8", False),
)
LAYERS = (("camera", "high", 3.0), ("document", "high", 3.0), ("document", "low", 10.0))
"""The layers a Firefox pupil on a good link ends up on, and the document's low one (6 fps,
where VP8's fastest speed blurs the text)."""


def lines(seconds: float = 1.0) -> list[str]:
    """Per layer and encoder: median CPU per frame, bitrate and P-frame PSNR; ``seconds``
    scales the default durations."""
    out = []
    for source, layer, duration in LAYERS:
        settings, _ = layer_settings("vp8", source, layer)
        for label, codec, before in ROWS:
            plain = encode_card(codec, source, duration * seconds, 0.0, before, layer, True)
            forced = encode_card(codec, source, duration * seconds, 1.0, before, layer)
            out.append(
                f"- {source} {layer} ({settings.width}×{settings.height}@{settings.fps}, "
                f"{settings.bitrate_kbps} kbit/s set), {label}: {plain.cpu_ms} ms CPU per frame "
                f"(median), {plain.kbps:.0f} kbit/s ({forced.kbps:.0f} with a keyframe forced "
                f"every second), P-frames {plain.psnr_db} dB PSNR"
            )
    return out


def main() -> int:
    print("\n".join(lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
