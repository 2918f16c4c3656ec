"""One pupil's pacer: their packets leave at the rate their link takes, sound first.

Before it, each frame's datagrams left in one burst: a 60 KB keyframe dumped into an 800 kbit/s
line whose router buffers ~16 KB is mostly dropped there, and every retransmission of it too.
Now each pupil has a token bucket (:class:`Pacer`) shared by their senders:

- **video** waits for its bytes (:meth:`Pacer.acquire`), in runs of ``RUN_S`` of the rate,
  one at a time, the room camera's first: its frames go between the runs of a document
  keyframe, not after all of it (measured on loopback: a 100 kB document keyframe held the
  room camera's frames back and its glass-to-glass p95 rose from 53 to 66–75 ms);
- **sound** never waits (:meth:`Pacer.debit`): its 20 ms packets go at once and the video
  behind it waits for the bytes they took;
- **padding**, when the pupil's layer choice probes their link (``allocate``), fills what the
  media leaves of the probe rate (:meth:`Pacer.padding_due`), through the same bucket.

The rate is set by the pupil's control loop (``control``) from their estimate; the bucket holds
``BURST_S`` of it (at least ``MIN_BURST`` bytes), so a frame smaller than that leaves at once,
as before; ``HEADROOM_BURST_S`` on the top level of a link with room to spare, so that most of
a top-layer keyframe does too.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable

BURST_S = 0.02
HEADROOM_BURST_S = 0.08
"""The bucket of a pupil on the top level whose link showed room to spare (``set_rate``'s
``headroom``). Their estimate stops where probing stopped (~6.5 Mbit/s on loopback), not at
their link's speed, so with a 20 ms bucket each 2-second room camera keyframe (up to ~100 kB)
was paced out over ~120 ms and held the next frames back: glass-to-glass p95 60–62 ms on
loopback (p50 42), 43–45 ms with this bucket. Below the top level the estimate is what the
link carries, and a bigger bucket would only move the queue into the pupil's modem: it stays
``BURST_S`` there (docs/adaptation.md, "Pacing")."""
RUN_S = BURST_S
"""A frame is cut into runs of this much of the rate, one at a time: the room camera's frames
go between a document keyframe's runs (a bigger bucket does not make bigger runs)."""
MIN_BURST = 4_000
"""Bytes: three full packets, so that a small frame is never split."""
MIN_RATE_BPS = 64_000


class Pacer:
    """A token bucket in bytes; time injected (``clock``), sleeping through ``sleep``."""

    def __init__(
        self,
        rate_bps: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], asyncio.Future[None] | object] | None = None,
    ) -> None:
        self._clock = clock
        self._sleep = sleep or asyncio.sleep
        self._busy = False
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._byte_rate = max(rate_bps, MIN_RATE_BPS) / 8
        self._burst_s = BURST_S
        self._tokens = self.burst
        self._at = clock()
        self._probe_bps = 0
        self._media_since_pad = 0
        self._pad_at = self._at
        self.padding_bytes = 0
        """Padding bytes really sent (counted by whoever sends them)."""

    @property
    def rate_bps(self) -> int:
        return int(self._byte_rate * 8)

    @property
    def burst(self) -> float:
        return max(self._byte_rate * self._burst_s, MIN_BURST)

    def set_rate(self, rate_bps: int, probe_bps: int = 0, headroom: bool = False) -> None:
        """Pace at ``rate_bps``; with ``probe_bps``, padding fills up to that rate; with
        ``headroom`` (the link carries more than the estimate says), the bigger bucket."""
        self._refill()
        self._burst_s = HEADROOM_BURST_S if headroom else BURST_S
        self._byte_rate = max(rate_bps, probe_bps, MIN_RATE_BPS) / 8
        self._tokens = min(self._tokens, self.burst)
        if probe_bps and not self._probe_bps:
            self._pad_at = self._clock()
            self._media_since_pad = 0
        self._probe_bps = probe_bps

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._tokens + (now - self._at) * self._byte_rate, self.burst)
        self._at = now

    def chunks(self, sizes: list[int]) -> list[slice]:
        """Cut a frame's datagrams (their sizes) into runs of at most ``RUN_S`` of the rate."""
        out: list[slice] = []
        start, total, limit = 0, 0, max(self._byte_rate * RUN_S, MIN_BURST)
        for i, size in enumerate(sizes):
            if total and total + size > limit:
                out.append(slice(start, i))
                start, total = i, 0
            total += size
        out.append(slice(start, len(sizes)))
        return out

    async def acquire(self, size: int, priority: int = 1, padding: bool = False) -> None:
        """Video (and probe padding): take ``size`` bytes, waiting for them, one run at a time;
        when several wait, the lowest ``priority`` goes first, then the earliest (the room
        camera, 0, before the document camera's runs, 1, and padding, 2)."""
        if self._busy or self._queue:
            waiter = asyncio.get_running_loop().create_future()
            heapq.heappush(self._queue, (priority, next(self._order), waiter))
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # it was our turn: pass it on
                raise
        self._busy = True
        try:
            self._refill()
            self._tokens -= size
            if not padding:
                self._media_since_pad += size
            if self._tokens < 0:
                await self._sleep(-self._tokens / self._byte_rate)  # type: ignore[misc]
        finally:
            self._release()

    def _release(self) -> None:
        """Hand the turn to the next waiter (highest priority first), or free it."""
        while self._queue:
            _, _, waiter = heapq.heappop(self._queue)
            if not waiter.done():
                waiter.set_result(None)
                return
        self._busy = False

    def debit(self, size: int) -> None:
        """Sound (and retransmissions): sent now; video after it waits for these bytes."""
        self._refill()
        self._tokens -= size
        self._media_since_pad += size

    def padding_due(self, ahead_s: float) -> int:
        """Bytes of padding to send over the next ``ahead_s`` so that media and padding reach
        the probe rate (0 when not probing): what the media left of the probe rate since the
        last call. The caller sends it through :meth:`acquire` (``padding=True``), paced."""
        now = self._clock()
        if not self._probe_bps:
            self._pad_at, self._media_since_pad = now, 0
            return 0
        target = (now - self._pad_at) * self._probe_bps / 8
        due = int(max(0.0, target - self._media_since_pad))
        self._pad_at, self._media_since_pad = now, 0
        return min(due, int(self._probe_bps / 8 * ahead_s))
