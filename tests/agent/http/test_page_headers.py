"""The kit's pupil page and its files carry the same headers as the relay's (kitsys/http.py
PAGE_HEADERS): no framing, no MIME sniffing, no referrer, nothing loaded from elsewhere."""

from __future__ import annotations

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from agent.http.app import make_app
from agent.session import ClassSession
from kitsys.http import PAGE_HEADERS
from tests.conftest import agent_config


async def test_pupil_page_and_files_cannot_be_framed_or_sniffed() -> None:
    session = ClassSession(agent_config(), "")
    try:
        async with TestServer(make_app(session)) as server, ClientSession() as http:
            for path, status in (
                ("/join/some-token", 200),
                ("/static/join.js", 200),
                ("/static/whep.js", 200),
            ):
                async with http.get(server.make_url(path)) as response:
                    assert response.status == status, path
                    for key, value in PAGE_HEADERS.items():
                        assert response.headers.get(key) == value, (path, key)
    finally:
        await session.stop()
