"""The picture pupils see while a configured camera is missing: grey card, plain-words label.

Rendered once per (size, text) with OpenCV and cached: a missing camera costs nothing per frame.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

UNAVAILABLE_TEXT = "Camera indisponible / camera unavailable"


@functools.lru_cache(maxsize=8)
def placeholder_i420(width: int, height: int, text: str = UNAVAILABLE_TEXT) -> np.ndarray:
    """An I420 picture (shape (h*3//2, w), uint8) with ``text`` centred; read-only, cached."""
    bgr = np.full((height, width, 3), 48, dtype=np.uint8)
    scale = max(0.5, width / 1280 * 1.2)
    thickness = max(1, round(scale * 2))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    org = (max(0, (width - tw) // 2), (height + th) // 2)
    cv2.putText(
        bgr, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (230, 230, 230), thickness, cv2.LINE_AA
    )
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    i420.setflags(write=False)
    return i420
