"""Shared fixtures: a live agent on loopback (real HTTP server, real sources, real aiortc)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.config import AgentConfig, config_from_dict
from agent.http.app import make_app
from agent.session import ClassSession
from agent.webrtc.ice import restrict_host_addresses

SMALL_SOURCES: dict[str, Any] = {
    "camera": {"width": 800, "height": 450, "fps": 30, "bitrate_kbps": 800},
    "document": {"width": 800, "height": 600, "fps": 15, "bitrate_kbps": 500},
}


@dataclass
class LiveAgent:
    base_url: str
    session: ClassSession
    http: aiohttp.ClientSession

    async def start(self) -> str:
        """Start the class; returns the WHEP URL."""
        async with self.http.post(self.base_url + "/api/session/start") as response:
            assert response.status == 200, await response.text()
        whep = self.session.whep_url
        assert whep is not None
        return whep

    async def stop(self) -> None:
        async with self.http.post(self.base_url + "/api/session/stop") as response:
            assert response.status == 200

    async def status(self) -> dict[str, Any]:
        async with self.http.get(self.base_url + "/api/status") as response:
            return dict(await response.json())


async def run_agent(config: AgentConfig) -> AsyncIterator[LiveAgent]:
    restrict_host_addresses(["127.0.0.1"])
    session = ClassSession(config, "")
    runner = web.AppRunner(make_app(session), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    session.base_url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        try:
            yield LiveAgent(session.base_url, session, http)
        finally:
            await session.stop()
            await runner.cleanup()


def agent_config(**overrides: Any) -> AgentConfig:
    data: dict[str, Any] = {"webrtc": {"host_addresses": ["127.0.0.1"]}, **SMALL_SOURCES}
    data.update(overrides)
    return config_from_dict(data)


@pytest.fixture
async def agent() -> AsyncIterator[LiveAgent]:
    """An agent on small synthetic sources (fast on 2 cores), class not started."""
    async for live in run_agent(agent_config()):
        yield live
