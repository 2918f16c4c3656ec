"""A pupil at home reaches a kit in a school, both behind NAT (issue 12's candidate loss).

Real Chromium runs the pupil page as shipped inside the pupil's namespace of ``natpath.py``;
the kit (this process) is behind the school router. Neither can reach the other until the kit
sends to the pupil's server-reflexive address, so the kit must have used the candidates the
page put under its first m-line only (``max-bundle``). The kit that lost them never connected
here (it only ever worked when the pupil's checks reached it directly: a LAN).

The page is given the topology's STUN server by wrapping ``RTCPeerConnection`` (giving pupils
their ICE servers is issue 12's other half). Chromium's flags show host addresses rather than
mDNS names (resolving those would send multicast); its server-reflexive candidate is the one
that matters here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.config import config_from_dict
from agent.http.app import make_app
from agent.session import ClassSession
from agent.webrtc.ice import restrict_host_addresses
from bench.browser import CHROMIUM_ARGS
from tests.agent.webrtc.natpath import FORWARDED_PORT, NatPath, chromium_in, nat_path
from tests.chromium import BROWSER_MARKS, room_camera
from tests.conftest import LOOPBACK, SMALL_SOURCES

pytestmark = BROWSER_MARKS

WITH_STUN = """
(() => {
  const Native = window.RTCPeerConnection;
  function WithStun(config) {
    return new Native({ ...(config || {}), iceServers: [{ urls: "%s" }] });
  }
  WithStun.prototype = Native.prototype;
  Object.setPrototypeOf(WithStun, Native);
  window.RTCPeerConnection = WithStun;
})();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def kit_behind_nat(path: NatPath, port: int) -> AsyncIterator[ClassSession]:
    """The agent on the school LAN: HTTP and ICE on its LAN address, the topology's STUN."""
    config = config_from_dict(
        {
            **SMALL_SOURCES,
            "webrtc": {
                "host_addresses": [path.kit_address],
                "ice_servers": [{"urls": [path.stun_url]}],
            },
        }
    )
    restrict_host_addresses([path.kit_address])
    session = ClassSession(config, f"http://{path.school_public}:{FORWARDED_PORT}")
    runner = web.AppRunner(make_app(session), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, path.kit_address, port).start()
        yield session
    finally:
        await session.stop()
        await runner.cleanup()
        restrict_host_addresses([LOOPBACK])


async def test_pupil_at_home_plays_a_kit_behind_a_school_nat(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    port = free_port()
    with nat_path(port) as path:
        async with kit_behind_nat(path, port) as session, playwright.async_playwright() as pw:
            await session.start()
            assert session.join_url is not None
            browser = await pw.chromium.launch(
                executable_path=str(chromium_in(path.pupil_namespace, tmp_path)),
                args=CHROMIUM_ARGS,
            )
            try:
                page = await (await browser.new_context(bypass_csp=True)).new_page()
                await page.add_init_script(WITH_STUN % path.stun_url)
                await page.goto(session.join_url)
                frames: list[int] = [0]

                async def playing() -> bool:
                    _, frames[0], _ = await room_camera(page)
                    return frames[0] >= 30

                await until_async(playing, 20, "room camera playing at the pupil's")
                [viewer] = session.viewers.values()
                pair = kit_pair(viewer)
                assert pair.remote_candidate.type == "srflx", pair
                assert pair.remote_candidate.host != path.pupil_address  # through the home NAT
            finally:
                await browser.close()


def kit_pair(viewer: Any) -> Any:
    connection = viewer.pc.getTransceivers()[0].receiver.transport.transport._connection
    return connection._nominated[1]


async def until_async(predicate: Any, timeout: float, what: str) -> None:
    """``until`` for an async predicate (polled every 250 ms)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout} s")
        await asyncio.sleep(0.25)
