"""Shared fixtures: a live agent on loopback (real HTTP server, real sources, real aiortc).

The machine's other interface must never be used: every agent config sets
``webrtc.host_addresses = ["127.0.0.1"]`` and :func:`restrict_host_addresses` patches aioice for
the whole process, so in-process aiortc receivers also gather loopback candidates only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aioice.mdns
import pytest
from aiohttp import web

from agent.config import AgentConfig, config_from_dict
from agent.http.app import make_app
from agent.problems import Problems
from agent.session import ClassSession
from agent.webrtc.ice import restrict_host_addresses

pytest_plugins = ["tests.chromium"]  # the ``browser`` fixture for every browser test

LOOPBACK = "127.0.0.1"

SMALL_SOURCES: dict[str, Any] = {
    "camera": {"width": 800, "height": 450, "fps": 30, "bitrate_kbps": 800},
    "document": {"width": 800, "height": 600, "fps": 15, "bitrate_kbps": 500},
}
"""Big enough for the clock code (768 px wide), small enough for 2 cores."""

MEDIA_THREAD_PREFIXES = ("encode-", "source-")

SDP_DATA = Path(__file__).parent / "agent" / "webrtc" / "data"
CHROME_MDNS_HOST = "4f2a9c1e-7b3d-4e8a-9c61-2d5f0b8e3a17.local"


def stored_sdp(name: str) -> str:
    """An SDP from ``tests/agent/webrtc/data`` with the CRLF line ends of the wire."""
    return (SDP_DATA / name).read_text(encoding="utf-8").replace("\n", "\r\n")


def chrome_offer_on_loopback() -> bytes:
    """Chromium's stored offer with its (mDNS) host candidate on 127.0.0.1 instead: resolving
    an mDNS name would send multicast on the LAN interface, which tests must not use."""
    return stored_sdp("chrome-offer.sdp").replace(CHROME_MDNS_HOST, LOOPBACK).encode()


@pytest.fixture(autouse=True)
def no_multicast_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail a test whose peers try to resolve mDNS candidates (multicast on the LAN)."""
    attempts: list[str] = []

    async def refuse() -> aioice.mdns.MDnsProtocol:
        attempts.append("mDNS")
        raise OSError("tests must not use multicast DNS")

    monkeypatch.setattr(aioice.mdns, "create_mdns_protocol", refuse)
    yield
    assert not attempts, "a peer tried to resolve an mDNS candidate (multicast on the LAN)"


@dataclass
class LiveAgent:
    """An agent served on 127.0.0.1 (random port) with an HTTP client to drive it."""

    base_url: str
    session: ClassSession
    http: aiohttp.ClientSession
    receivers: list[Any] = field(default_factory=list)

    async def start(self) -> str:
        """Start the class (through the API); returns the WHEP URL."""
        async with self.http.post(self.base_url + "/api/session/start") as response:
            assert response.status == 200, await response.text()
        whep = self.session.whep_url
        assert whep is not None
        return whep

    async def stop(self) -> None:
        async with self.http.post(self.base_url + "/api/session/stop") as response:
            assert response.status == 200, await response.text()

    async def status(self) -> dict[str, Any]:
        async with self.http.get(self.base_url + "/api/status") as response:
            assert response.status == 200
            return dict(await response.json())

    def receiver(self, whep_url: str, **kwargs: Any) -> Any:
        """A :class:`~bench.whep_receiver.WhepReceiver` closed when the test ends."""
        from bench.whep_receiver import WhepReceiver

        pupil = WhepReceiver(whep_url, **kwargs)
        self.receivers.append(pupil)
        return pupil


def pending_tasks() -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]


def media_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(MEDIA_THREAD_PREFIXES)]


async def until(
    predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> float:
    """Poll ``predicate`` every 20 ms; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic()


async def run_agent(config: AgentConfig) -> AsyncIterator[LiveAgent]:
    restrict_host_addresses([LOOPBACK])
    assert config.webrtc.host_addresses == [LOOPBACK]
    session = ClassSession(config, "")
    runner = web.AppRunner(make_app(session), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = runner.addresses[0][1]
    session.base_url = f"http://{LOOPBACK}:{port}"
    live: LiveAgent | None = None
    try:
        async with aiohttp.ClientSession() as http:
            live = LiveAgent(session.base_url, session, http)
            yield live
    finally:
        if live is not None:
            await asyncio.gather(
                *(pupil.close(delete=False) for pupil in live.receivers), return_exceptions=True
            )
        await session.stop()
        await runner.cleanup()
        # Clean teardown: no viewer, no task, no device or encoder thread is left.
        assert not session.viewers
        try:
            await until(lambda: not pending_tasks(), 2)
            await until(lambda: not media_threads(), 5)
        except AssertionError:
            raise AssertionError(
                f"left running: tasks {pending_tasks()}, threads {media_threads()}"
            ) from None


def agent_config(**overrides: Any) -> AgentConfig:
    """Small synthetic sources on loopback; ``overrides`` replace whole top-level sections.
    The speaker is ``null`` (played nowhere, in real time): this machine has no sound card."""
    data: dict[str, Any] = {
        "webrtc": {"host_addresses": [LOOPBACK]},
        "speaker": {"device": "null"},
        **SMALL_SOURCES,
    }
    webrtc = overrides.pop("webrtc", {})
    data["webrtc"] = {**data["webrtc"], **webrtc}
    data.update(overrides)
    return config_from_dict(data)


AgentFactory = Callable[..., Awaitable[LiveAgent]]


@pytest.fixture
async def agent() -> AsyncIterator[LiveAgent]:
    """An agent on small synthetic sources (fast on 2 cores), class not started."""
    async for live in run_agent(agent_config()):
        yield live


@pytest.fixture
async def full_size_agent() -> AsyncIterator[LiveAgent]:
    """An agent on the default synthetic sources: 1280×720@30 and 1920×1080@15."""
    config = config_from_dict({"webrtc": {"host_addresses": [LOOPBACK]}})
    assert (config.camera.width, config.camera.height, config.camera.fps) == (1280, 720, 30)
    assert (config.document.width, config.document.height, config.document.fps) == (1920, 1080, 15)
    async for live in run_agent(config):
        yield live


@pytest.fixture
async def make_agent() -> AsyncIterator[AgentFactory]:
    """``await make_agent(webrtc={...}, encoder={...})``: an agent with other settings."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(**overrides: Any) -> LiveAgent:
            generator = run_agent(agent_config(**overrides))
            live = await generator.__anext__()
            stack.push_async_callback(_finish, generator)
            return live

        yield make


async def _finish(generator: AsyncIterator[LiveAgent]) -> None:
    with contextlib.suppress(StopAsyncIteration):
        await generator.__anext__()


@pytest.fixture
async def kit_with_problems() -> AsyncIterator[tuple[str, Problems]]:
    """An idle agent's HTTP app (no class, no devices opened) and the problems it shows."""
    problems = Problems()
    runner = web.AppRunner(make_app(ClassSession(agent_config(), ""), problems))
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    try:
        yield f"http://{LOOPBACK}:{runner.addresses[0][1]}", problems
    finally:
        await runner.cleanup()
