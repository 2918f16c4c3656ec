"""Kiosk previews: small JPEGs made from the newest raw picture, cached per picture."""

from __future__ import annotations

import cv2
import numpy as np

from agent.media.preview import PreviewTap, i420_to_small_bgr, jpeg_preview
from agent.sources.base import RawVideoFrame


def frame(width: int, height: int, y: int = 120, u: int = 90, v: int = 200) -> RawVideoFrame:
    data = np.empty((height * 3 // 2, width), np.uint8)
    data[:height] = y
    data[height : height + height // 4] = u
    data[height + height // 4 :] = v
    return RawVideoFrame(data, width, height, 0.0)


def test_sizes_are_subsampled_to_at_most_480_wide() -> None:
    assert i420_to_small_bgr(frame(1280, 720)).shape == (240, 426, 3)
    assert i420_to_small_bgr(frame(1920, 1080)).shape == (268, 480, 3)
    assert i420_to_small_bgr(frame(320, 240)).shape == (240, 320, 3)


def test_colours_survive() -> None:
    """A flat I420 colour comes out as the same BGR colour OpenCV's own conversion gives."""
    small = i420_to_small_bgr(frame(1280, 720))
    full = cv2.cvtColor(frame(1280, 720).data, cv2.COLOR_YUV2BGR_I420)
    assert np.abs(small[10, 10].astype(int) - full[10, 10].astype(int)).max() <= 1


def test_jpeg_decodes() -> None:
    data = jpeg_preview(frame(1920, 1080))
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (268, 480, 3)


def test_tap_converts_each_picture_once() -> None:
    tap = PreviewTap()
    assert tap.jpeg() is None
    first = frame(640, 360)
    tap.offer(first)
    a = tap.jpeg()
    assert a is not None and tap.jpeg() is a  # cached: same object, no second conversion
    tap.offer(frame(640, 360, y=30))
    b = tap.jpeg()
    assert b is not None and b != a
