"""One clock for every source, so that audio and video carry comparable timestamps.

``MediaClock`` reads a monotonic clock (for presentation timestamps: never jumps) and a wall
clock (for the clock code drawn on test cards: comparable across processes on one machine).
Both are injectable so tests never sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction

VIDEO_RATE = 90_000
AUDIO_RATE = 48_000
VIDEO_TIME_BASE = Fraction(1, VIDEO_RATE)
AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)


class MediaClock:
    """Monotonic media time since the session epoch, plus wall-clock milliseconds."""

    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self.epoch = monotonic()

    def now(self) -> float:
        """Monotonic seconds (same scale as ``epoch``)."""
        return self._monotonic()

    def wall_ms(self) -> int:
        """Wall-clock time in whole milliseconds."""
        return int(self._wall() * 1000)

    def pts(self, capture_time: float, rate: int) -> int:
        """Presentation timestamp of ``capture_time`` in units of ``1/rate`` since the epoch."""
        return max(0, round((capture_time - self.epoch) * rate))
