"""Kiosk previews: a small JPEG of the newest picture of a source, made only when asked.

The kiosk shows the teacher what pupils see without a second encode: each source's newest raw
picture is kept by reference (no copy, no work per frame), and a preview is made from it on
request by plain subsampling (every n-th pixel, no filtering) and one small JPEG encode, about a
millisecond at 480 px wide. The result is cached per picture, so any number of kiosk pages
polling at a few frames per second cost at most one conversion per new picture.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from ..sources.base import RawVideoFrame

MAX_PREVIEW_WIDTH = 480
JPEG_QUALITY = 70


def i420_to_small_bgr(frame: RawVideoFrame, max_width: int = MAX_PREVIEW_WIDTH) -> np.ndarray:
    """Subsample an I420 picture by an integer step so it is at most ``max_width`` wide."""
    step = max(1, -(-frame.width // max_width))
    w, h = frame.width, frame.height
    y = frame.data[:h]
    chroma = frame.data[h:].reshape(2, h // 2, w // 2)  # U rows then V rows, each (h/2, w/2)
    small_y = y[::step, ::step]
    # I420 needs an even width and a height divisible by 4 (two chroma rows per packed row).
    sh, sw = small_y.shape[0] // 4 * 4, small_y.shape[1] // 2 * 2
    small_y = small_y[:sh, :sw]
    size = (sw // 2, sh // 2)
    u = cv2.resize(chroma[0], size, interpolation=cv2.INTER_NEAREST)
    v = cv2.resize(chroma[1], size, interpolation=cv2.INTER_NEAREST)
    i420 = np.concatenate([small_y, u.reshape(sh // 4, sw), v.reshape(sh // 4, sw)])
    return cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)


def jpeg_preview(frame: RawVideoFrame, max_width: int = MAX_PREVIEW_WIDTH) -> bytes:
    ok, data = cv2.imencode(
        ".jpg", i420_to_small_bgr(frame, max_width), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    )
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(data)


class PreviewTap:
    """Keeps the newest picture of one source (set from the device thread) and its preview."""

    def __init__(self) -> None:
        self.latest: RawVideoFrame | None = None
        self._lock = threading.Lock()
        self._cached: tuple[RawVideoFrame, bytes] | None = None

    def offer(self, frame: RawVideoFrame) -> None:
        self.latest = frame  # one reference assignment: nothing else on the device thread

    def jpeg(self) -> bytes | None:
        """The preview of the newest picture (blocking, ~1 ms: call it off the event loop)."""
        frame = self.latest
        if frame is None:
            return None
        with self._lock:
            if self._cached is not None and self._cached[0] is frame:
                return self._cached[1]
            data = jpeg_preview(frame)
            self._cached = (frame, data)
            return data
