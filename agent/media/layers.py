"""Quality layers: each camera is encoded at a few qualities, each shared by every pupil on it.

The room camera has three layers, the document camera two (issue 14):

========  ==========================  ==========================================================
layer     room camera (config 720p30)  document camera (config 1080p15)
========  ==========================  ==========================================================
high      the configured picture       the configured picture
mid       half size, same fps,         —
          ~22 % of the bitrate
low       quarter size, ≤ 20 fps,      ≤ 1280 px wide, ≤ 6 fps, 300 kbit/s: a still page stays
          150 kbit/s                   legible (full detail at a low rate beats a blurred 15 fps)
========  ==========================  ==========================================================

The low room layer runs at 20 fps rather than the 15 the issue suggests, so that a pupil on it
(an 800 kbit/s link) still sees ≥ 15 fps once a frame or two is lost. The document's low layer
keeps a keyframe every 10 s (a pupil's loss asks for one sooner) and a 2 s rate buffer, so its
keyframes — most of its bytes: a page barely changes — keep the text sharp.

A layer is a ``(size, rate, bitrate)``: :func:`layers_of` derives them from the camera's
configuration, top first, dropping one that would not be smaller than the one above it (a small
configured picture has fewer layers). Every layer is scaled once from the captured picture, on
its own encoder's thread, by libswscale (``VideoFrame.reformat``): measured per picture,
1280×720 → 320×180 0.21 ms and 1920×1080 → 1280×720 0.66 ms, against 0.49 and 2.6 ms with
OpenCV's ``INTER_AREA`` (0.08 ms against 0.34 for an exact halving: too small to matter next to
a 7 ms encode).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import VideoSourceConfig

HIGH, MID, LOW = "high", "mid", "low"
LAYER_NAMES = (HIGH, MID, LOW)
"""Every layer name, top first."""
MIN_WIDTH = 160
"""No layer narrower than this (the room camera's low layer of a small configured picture)."""


@dataclass(frozen=True, slots=True)
class Layer:
    """One quality of one camera."""

    name: str
    width: int
    height: int
    fps: int
    bitrate_kbps: int
    keyframe_interval_s: float | None = None
    """None: the encoder section's ``keyframe_interval_s``."""
    rate_buffer_s: float = 0.5
    """The encoder's rate buffer (VBV) in seconds of its bitrate: how big one frame may be."""

    @property
    def bps(self) -> int:
        return self.bitrate_kbps * 1000


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def _scaled(cfg: VideoSourceConfig, factor: float) -> tuple[int, int]:
    return _even(cfg.width * factor), _even(cfg.height * factor)


def layers_of(source_id: str, cfg: VideoSourceConfig) -> tuple[Layer, ...]:
    """The layers of camera ``source_id`` (``camera`` or ``document``), top first."""
    high = Layer(HIGH, cfg.width, cfg.height, cfg.fps, cfg.bitrate_kbps)
    if source_id == "document":
        factor = min(1.0, 1280 / cfg.width)
        width, height = _scaled(cfg, factor)
        low = Layer(LOW, width, height, min(cfg.fps, 6), min(300, cfg.bitrate_kbps), 10.0, 2.0)
        candidates = [high, low]
    else:
        w_mid, h_mid = _scaled(cfg, 0.5)
        mid_kbps = max(150, cfg.bitrate_kbps * 9 // 40)
        mid = Layer(MID, w_mid, h_mid, cfg.fps, min(mid_kbps, cfg.bitrate_kbps))
        w_low, h_low = _scaled(cfg, 0.25)
        low = Layer(LOW, w_low, h_low, min(cfg.fps, 20), min(150, mid.bitrate_kbps))
        candidates = [high, mid, low]
    layers = [high]
    for layer in candidates[1:]:
        above = layers[-1]
        smaller = layer.bitrate_kbps < above.bitrate_kbps and (
            layer.width < above.width or layer.fps < above.fps
        )
        if smaller and layer.width >= MIN_WIDTH:
            layers.append(layer)
    return tuple(layers)
