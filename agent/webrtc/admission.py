"""Joins in progress: a small cap on half-open viewers, so that offers nobody completes cannot
keep real pupils out (issue 13).

A viewer is half-open from its answer until it connects (or is dropped after
``webrtc.connect_timeout_s``). Before, they counted only against ``max_viewers`` for 30 s:
200 offers in a burst filled a class. Now at most ``max_connecting`` are half-open at once, and
at most ``max_connecting_per_address`` from one LAN address; a join over the first waits
``ADMISSION_WAIT_S`` for a slot (a class of pupils scanning the QR code together joins in turns
rather than being refused), a join over the second is refused at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..errors import ServiceUnavailable, TooManyRequests

ADMISSION_WAIT_S = 3.0
"""A join waits this long for a half-open slot. On a LAN a pupil connects in ~0.3 s, from
home in 1–2 s: slots turn over well within it unless they are being held."""
RETRY_AFTER_S = 2


class JoinGate:
    """Counts come from the caller (the session's viewers); :meth:`changed` is called whenever
    a viewer connects or goes, waking the joins that wait."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self.waiting = 0

    def changed(self) -> None:
        self._changed.set()

    async def admit(
        self,
        connecting: Callable[[str | None], int],
        peer: str | None,
        max_connecting: int,
        max_per_peer: int,
        max_waiting: int,
        wait_s: float = ADMISSION_WAIT_S,
    ) -> None:
        """Return once a viewer may be created (the caller adds it before its next ``await``);
        raise :class:`TooManyRequests` or :class:`ServiceUnavailable` otherwise.
        ``connecting(None)``: half-open viewers in all; ``connecting(peer)``: from ``peer``."""
        if peer is not None and connecting(peer) >= max_per_peer:
            raise TooManyRequests(
                "too many joins in progress from this address; try again in a few seconds",
                retry_after_s=RETRY_AFTER_S,
            )
        if connecting(None) < max_connecting:
            return
        if self.waiting >= max_waiting:
            raise self._busy()
        self.waiting += 1
        try:
            async with asyncio.timeout(wait_s):
                while connecting(None) >= max_connecting:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise self._busy() from None
        finally:
            self.waiting -= 1

    @staticmethod
    def _busy() -> ServiceUnavailable:
        return ServiceUnavailable(
            "too many pupils are joining at once; try again in a few seconds",
            retry_after_s=RETRY_AFTER_S,
        )
