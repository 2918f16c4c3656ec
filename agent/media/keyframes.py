"""Rate-limited keyframe requests: joins and PLI/FIR from any viewer, one keyframe for all.

A request inside the quiet interval is not lost: it is deferred to the end of the interval, so
a viewer that joins 100 ms after another still gets its keyframe within ``min_interval``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class KeyframeLimiter:
    """Calls ``force`` at most once per ``min_interval`` seconds; later requests are deferred."""

    def __init__(
        self,
        force: Callable[[], None],
        min_interval: float,
        now: Callable[[], float],
        call_later: Callable[[float, Callable[[], None]], asyncio.TimerHandle] | None = None,
    ) -> None:
        self._force = force
        self._min_interval = min_interval
        self._now = now
        self._call_later = call_later or _loop_call_later
        self._last: float | None = None
        self._deferred: asyncio.TimerHandle | None = None
        self.requested = 0
        self.forced = 0

    def request(self) -> None:
        self.requested += 1
        if self._deferred is not None:
            return
        now = self._now()
        wait = 0.0 if self._last is None else self._last + self._min_interval - now
        if wait <= 0:
            self._fire()
        else:
            self._deferred = self._call_later(wait, self._fire_deferred)

    def cancel(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None

    def _fire_deferred(self) -> None:
        self._deferred = None
        self._fire()

    def _fire(self) -> None:
        self._last = self._now()
        self.forced += 1
        self._force()


def _loop_call_later(delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_later(delay, callback)
