"""A kit (or anything) that gives up in the middle of the WebSocket handshake is no error of the
server's: one INFO line, no traceback (issue 16)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os

import pytest
from yarl import URL

from tests.provisioning.conftest import LiveServer


async def test_a_client_gone_during_the_handshake_is_one_info_line(
    live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = URL(live_server.url)
    caplog.set_level(logging.INFO)
    for _ in range(20):  # the race (gone before or while the answer is written) both ways
        _, writer = await asyncio.open_connection(url.host, url.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /link/v1 HTTP/1.1\r\nHost: {url.host}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        writer.transport.abort()  # gone at once: no FIN, a reset
    await asyncio.sleep(0.5)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
