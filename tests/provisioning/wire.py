"""A raw protocol peer for bad-input tests: frames are sent exactly as given."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from kitlink import LINK_PATH, VERSION, Hello, encode


def hello_for(kit_id: str, secret: str, **changes: Any) -> str:
    return encode(Hello(v=VERSION, kit_id=kit_id, secret=secret, software="test", **changes))


def hello(agent: Any) -> str:
    credential = agent.uplink.credential
    return hello_for(credential.kit_id, credential.secret)


async def raw_close(
    live: Any, *frames: str | bytes, timeout: float = 5.0, max_size: int | None = None
) -> tuple[int, str]:
    """Send ``frames``, read until the server closes; returns its close code and reason."""
    url = live.url.replace("http://", "ws://") + LINK_PATH
    async with connect(url, max_size=max_size, open_timeout=5, ping_interval=None) as ws:
        try:
            for frame in frames:
                await ws.send(frame)
            async with asyncio.timeout(timeout):
                async for _ in ws:
                    pass
        except ConnectionClosed:
            pass
        assert ws.close_code is not None, "the server did not close the link"
        return ws.close_code, ws.close_reason or ""
