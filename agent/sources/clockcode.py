"""The clock code: capture wall-clock time drawn into a picture, read back by any receiver.

Layout (see ``docs/clock-code.md``): in the top-left corner, 32 square blocks of 24×24 luma
pixels in one row; block *i* covers x = 24·i … 24·i+23, y = 0 … 23 and is white (Y = 235) when
bit 31−i of ``wall_ms mod 2**32`` is 1, black (Y = 16) otherwise. A receiver decodes the frame,
samples the centre of each block, and compares the number with its own wall clock.
"""

from __future__ import annotations

import numpy as np

BLOCK = 24
BITS = 32
WIDTH = BLOCK * BITS
WHITE = 235
BLACK = 16
_MODULO = 1 << BITS
_WEIGHTS = np.array([1 << (BITS - 1 - i) for i in range(BITS)], dtype=np.uint64)


def draw_clock_code(luma: np.ndarray, wall_ms: int) -> None:
    """Draw the code for ``wall_ms`` into the Y plane ``luma`` (shape (h, w), uint8) in place.

    A picture narrower than 768 or shorter than 24 pixels cannot hold the code: nothing is drawn.
    """
    if luma.shape[0] < BLOCK or luma.shape[1] < WIDTH:
        return
    value = wall_ms % _MODULO
    bits = (value >> np.arange(BITS - 1, -1, -1, dtype=np.uint64)) & 1
    row = np.where(bits.astype(bool), WHITE, BLACK).astype(np.uint8)
    luma[:BLOCK, :WIDTH] = np.repeat(row, BLOCK)[np.newaxis, :]


def read_clock_code(luma: np.ndarray, scale: float = 1.0) -> int | None:
    """Read the code back from a decoded Y plane; None when the picture carries no code.

    Each block is sampled over its centre half (12×12 of 24×24), which survives compression at
    any sane bitrate; a block whose mean is neither clearly white nor clearly black means there
    is no code. ``scale``: the picture is the drawn one scaled by this (a quality layer: the
    room camera's 320×180 of 1280×720 is 0.25, blocks of 6×6 pixels sampled over 3×3).
    """
    block = BLOCK * scale
    if block < 4 or luma.shape[0] < block or luma.shape[1] < block * BITS:
        return None
    if scale == 1.0:
        centre = luma[6:18, :WIDTH].astype(np.float32).reshape(12, BITS, BLOCK)[:, :, 6:18]
        means = centre.mean(axis=(0, 2))
    else:
        low, high = round(block / 4), max(round(block * 3 / 4), round(block / 4) + 1)
        rows = luma[low:high].astype(np.float32)
        means = np.array(
            [rows[:, round(block * i) + low : round(block * i) + high].mean() for i in range(BITS)]
        )
    if np.any((means > 80) & (means < 170)):
        return None
    bits = (means >= (WHITE + BLACK) / 2).astype(np.uint64)
    return int((bits * _WEIGHTS).sum())


def delay_ms(code: int, now_wall_ms: int) -> int:
    """Milliseconds from the capture stamped in ``code`` to ``now_wall_ms``, modulo 2**32."""
    diff = (now_wall_ms - code) % _MODULO
    return diff if diff < _MODULO // 2 else diff - _MODULO
