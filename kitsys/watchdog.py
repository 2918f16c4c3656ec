"""The watchdog pinger: ``WATCHDOG=1`` only while the process is really healthy.

systemd restarts a ``WatchdogSec=`` service that stays silent too long. Pinging from a thread
would vouch for a process whose event loop is stuck; pinging from the loop alone would vouch for
one whose HTTP server no longer answers. So the pinger is an asyncio task that, every third of
the watchdog interval, checks two things before it pings: the loop woke it up on time (it was
not blocked for longer than ``max_lag_s``) and the probe (a real HTTP request to the process's
own server) answered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .notify import Notifier

log = logging.getLogger("kitsys.watchdog")

Probe = Callable[[], Awaitable[bool]]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class WatchdogPinger:
    def __init__(
        self,
        notifier: Notifier,
        interval_s: float,
        probe: Probe,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        max_lag_s: float | None = None,
    ) -> None:
        self.notifier = notifier
        self.period_s = interval_s / 3
        self.probe = probe
        self.clock = clock
        self.sleep = sleep
        self.max_lag_s = self.period_s if max_lag_s is None else max_lag_s
        """A wake-up later than this means the loop was blocked: that round sends no ping."""
        self.pings = 0
        self.skipped = 0

    async def run(self) -> None:
        """Ping forever (cancel to stop)."""
        while True:
            due = self.clock() + self.period_s
            await self.sleep(self.period_s)
            await self.beat(self.clock() - due)

    async def beat(self, lag_s: float) -> bool:
        """One round: ping if the loop was on time and the probe answers; True if pinged."""
        if lag_s > self.max_lag_s:
            log.warning("event loop was blocked for %.1f s: watchdog not pinged", lag_s)
            self.skipped += 1
            return False
        try:
            async with asyncio.timeout(self.period_s):
                healthy = await self.probe()
        except (TimeoutError, OSError) as exc:
            log.warning("health probe failed (%s): watchdog not pinged", exc or type(exc).__name__)
            healthy = False
        if not healthy:
            self.skipped += 1
            return False
        self.notifier.watchdog()
        self.pings += 1
        return True


def http_probe(host: str, port: int, path: str = "/healthz") -> Probe:
    """A probe that is healthy when ``GET path`` on our own server answers 200."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"

    async def probe() -> bool:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            await writer.drain()
            status_line = await reader.readline()
        finally:
            writer.close()
        parts = status_line.split()
        return len(parts) >= 2 and parts[1] == b"200"

    return probe


def start_watchdog(notifier: Notifier, probe: Probe) -> asyncio.Task[None] | None:
    """Start pinging if systemd asked for a watchdog (``WATCHDOG_USEC``); else None."""
    if notifier.watchdog_s is None or not notifier.enabled:
        return None
    pinger = WatchdogPinger(notifier, notifier.watchdog_s, probe)
    return asyncio.create_task(pinger.run(), name="systemd-watchdog")
