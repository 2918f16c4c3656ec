"""A body trickled slower than the connection guard allows is refused 408, not waited for."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from agent.http.app import make_app
from agent.session import ClassSession
from kitsys.httpguard import ConnectionGuard, GuardedSite, Limits, runner_options
from tests.conftest import agent_config, until


async def test_a_trickled_body_gets_408_at_the_body_timeout() -> None:
    session = ClassSession(agent_config(), "")
    app = make_app(session)
    guard = ConnectionGuard(Limits(body_timeout_s=0.5))
    guard.install(app)
    runner = web.AppRunner(app, access_log=None, **runner_options(guard.limits))
    await runner.setup()
    await GuardedSite(runner, guard, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                b"POST /api/session/mute HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 15\r\n\r\n{"
            )
            started = time.monotonic()
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            took = time.monotonic() - started
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 408"), head
        assert 0.4 < took < 2.0, took
        closed = await until(lambda: not guard.core.open, 5, "the connection closed")
        assert closed - started < 0.5 + 2.0 + 0.5  # the rest of the body is not waited for long
    finally:
        await runner.cleanup()
        await session.stop()
