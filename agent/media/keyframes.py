"""Rate-limited keyframe requests: joins and PLI/FIR from any viewer, one keyframe for all.

A request inside the quiet interval is not lost: it is deferred to the end of the interval, so
a viewer that joins 100 ms after another still gets its keyframe within ``min_interval``.

A join is more pressing than a repair: the pupil sees nothing until its first keyframe, while a
pupil that sent a PLI (or switches layer) keeps its picture meanwhile. So a join waits at most
``join_interval`` after the last keyframe, not ``min_interval``, and rides on a keyframe already
due by then; every join and repair waiting when one fires is served by it, so the layer gets at
most one forced keyframe per ``join_interval`` whatever the number of joiners: one per window
for all of them, not one per pupil. Measured (``python -m bench.burst``: 30 pupils joining
within 5 s of Start, on the room camera's middle layer; shared 2-core VM): with joins waiting
like repairs (500 ms), the kit's part of the first picture (connected → first keyframe) was
p50 282–380 ms, p95 518–630 ms, most of it this wait; with 200 ms for joins (and the keyframe
asked for while the pupil connects, tracks.py) p50 94–206 ms, p95 192–516 ms, for ~20 forced
keyframes on that layer instead of ~12 (a middle-layer keyframe is 9.8 kB against 1.4 kB for a
P-frame; docs/adaptation.md, "A class starting").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class KeyframeLimiter:
    """Calls ``force`` at most once per ``min_interval`` seconds for repairs, once per
    ``join_interval`` for joins; later requests are deferred and merged."""

    def __init__(
        self,
        force: Callable[[], None],
        min_interval: float,
        now: Callable[[], float],
        call_later: Callable[[float, Callable[[], None]], asyncio.TimerHandle] | None = None,
        join_interval: float | None = None,
    ) -> None:
        self._force = force
        self._min_interval = min_interval
        self._join_interval = (
            min_interval if join_interval is None else min(join_interval, min_interval)
        )
        self._now = now
        self._call_later = call_later or _loop_call_later
        self._last: float | None = None
        self._deferred: asyncio.TimerHandle | None = None
        self._due: float | None = None
        """When the deferred keyframe fires."""
        self.requested = 0
        self.joins = 0
        self.forced = 0

    def request(self) -> None:
        """A repair (PLI/FIR, a queue resync) or a layer switch: the viewer has a picture."""
        self.requested += 1
        self._schedule(self._min_interval)

    def join(self) -> None:
        """A new viewer's first picture: sooner than a repair, still merged with the others."""
        self.requested += 1
        self.joins += 1
        self._schedule(self._join_interval)

    def _schedule(self, interval: float) -> None:
        now = self._now()
        at = now if self._last is None else max(now, self._last + interval)
        if self._due is not None and self._due <= at:
            return  # a keyframe is due by then: this request rides on it
        self.cancel()
        if at <= now:
            self._fire()
        else:
            self._due = at
            self._deferred = self._call_later(at - now, self._fire_deferred)

    def cancel(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        self._due = None

    def _fire_deferred(self) -> None:
        self._deferred = None
        self._due = None
        self._fire()

    def _fire(self) -> None:
        self._last = self._now()
        self.forced += 1
        self._force()


def _loop_call_later(delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
    return asyncio.get_running_loop().call_later(delay, callback)
