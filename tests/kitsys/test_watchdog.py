"""The watchdog pinger with an injected clock: pings while healthy, none when the loop was
blocked or the server does not answer. The real agent and server are in tests/systemd."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from kitsys.notify import Notifier
from kitsys.watchdog import WatchdogPinger, http_probe


class Done(Exception):
    """Ends the pinger's loop after the rounds a test asked for."""


class FakeTime:
    """A clock and a sleep: sleeping advances the clock by the time asked plus any stall."""

    def __init__(self, rounds: int) -> None:
        self.now = 100.0
        self.stalls: list[float] = []
        self.rounds = rounds

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if self.rounds == 0:
            raise Done
        self.rounds -= 1
        self.now += seconds + (self.stalls.pop(0) if self.stalls else 0.0)
        await asyncio.sleep(0)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, Notifier]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        yield sock, Notifier({"NOTIFY_SOCKET": path})


def received(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096))
        except BlockingIOError:
            return out


async def run_rounds(pinger: WatchdogPinger) -> None:
    with pytest.raises(Done):
        await pinger.run()


async def always() -> bool:
    return True


async def test_pings_every_round_while_healthy(listener: tuple[socket.socket, Notifier]) -> None:
    sock, notifier = listener
    fake = FakeTime(4)
    pinger = WatchdogPinger(notifier, 3.0, always, clock=fake.clock, sleep=fake.sleep)
    await run_rounds(pinger)
    assert pinger.period_s == 1.0
    assert received(sock) == [b"WATCHDOG=1"] * 4


async def test_no_ping_for_a_round_after_the_loop_was_blocked(
    listener: tuple[socket.socket, Notifier],
) -> None:
    sock, notifier = listener
    fake = FakeTime(3)
    fake.stalls = [0.0, 5.0, 0.2]  # the second wake-up comes 5 s late: the loop was stuck
    pinger = WatchdogPinger(notifier, 3.0, always, clock=fake.clock, sleep=fake.sleep)
    await run_rounds(pinger)
    assert (pinger.pings, pinger.skipped) == (2, 1)
    assert len(received(sock)) == 2


async def test_no_ping_while_the_probe_fails(listener: tuple[socket.socket, Notifier]) -> None:
    sock, notifier = listener
    answers = [True, False, True]

    async def probe() -> bool:
        return answers.pop(0)

    async def refused() -> bool:
        raise ConnectionRefusedError("connection refused")

    fake = FakeTime(3)
    pinger = WatchdogPinger(notifier, 3.0, probe, clock=fake.clock, sleep=fake.sleep)
    await run_rounds(pinger)
    assert (pinger.pings, pinger.skipped) == (2, 1)
    assert not await WatchdogPinger(notifier, 3.0, refused).beat(0.0)
    assert len(received(sock)) == 2


async def test_a_hung_probe_times_out(listener: tuple[socket.socket, Notifier]) -> None:
    _, notifier = listener

    async def hangs() -> bool:
        await asyncio.sleep(10)
        return True

    pinger = WatchdogPinger(notifier, 0.3, hangs)  # probe timeout = one period, 0.1 s
    assert not await pinger.beat(0.0)


async def test_http_probe_against_a_real_server() -> None:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        assert await http_probe("0.0.0.0", port)()
        assert not await http_probe("127.0.0.1", port, "/missing")()
    finally:
        await runner.cleanup()
    with pytest.raises(OSError):
        await http_probe("127.0.0.1", port)()
