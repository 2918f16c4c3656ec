"""Fuzzing the kiosk API's JSON bodies (agent/http/app.py ``_json_body``) over real HTTP: any
body is a 200/409 (valid), a 400 or a 413, never a 500; and JSON nested 2,000 deep, which
raised RecursionError (a 500 and a traceback in the log), is a clean 400."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.http.app import make_app
from agent.session import ClassSession
from tests.conftest import LOOPBACK, agent_config
from tests.fuzz import ODD_TEXT, bounded, examples, network_bytes

VALID = [{"muted": True}, {"muted": False}]
SEEDS = [json.dumps(m).encode() for m in VALID] + [b"{}", b""]


class IdleKit:
    """The agent's HTTP app on loopback (no class: a valid mute is a 409) in its own loop."""

    def __init__(self) -> None:
        self.loop = asyncio.Runner()
        self.runner = web.AppRunner(make_app(ClassSession(agent_config(), "")), access_log=None)
        self.loop.run(self._start())

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, LOOPBACK, 0).start()
        self.url = f"http://{LOOPBACK}:{self.runner.addresses[0][1]}"
        self.http = aiohttp.ClientSession()

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> int:
        async def go() -> int:
            async with self.http.post(self.url + path, data=body, headers=headers) as response:
                await response.read()
                return response.status

        return self.loop.run(go())

    def close(self) -> None:
        async def stop() -> None:
            await self.http.close()
            await self.runner.cleanup()

        self.loop.run(stop())
        self.loop.close()


@pytest.fixture(scope="module")
def kit() -> Iterator[IdleKit]:
    idle = IdleKit()
    yield idle
    idle.close()


def test_deep_json_is_a_400(kit: IdleKit, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        for body in (b"[" * 2000 + b"]" * 2000, b'{"muted":' * 400 + b"1" + b"}" * 400):
            assert kit.post("/api/session/mute", body) == 400
    assert not caplog.records  # no traceback


def test_bodies_as_the_kiosk_sends_them(kit: IdleKit) -> None:
    assert kit.post("/api/session/mute", b'{"muted": true}') == 409  # valid; no class
    assert kit.post("/api/session/mute", b'{"muted": NaN}') == 400
    assert kit.post("/api/session/mute", '{"muted": true}'.encode("utf-16")) == 400


@settings(max_examples=examples(200))
@given(body=network_bytes(SEEDS, VALID), content_type=st.sampled_from(["application/json", ""]))
def test_any_body(kit: IdleKit, body: bytes, content_type: str) -> None:
    with bounded(seconds=1.0, megabytes=16):
        status = kit.post("/api/session/mute", body, {"Content-Type": content_type})
    assert status in (400, 409, 413), (status, body[:200])


@settings(max_examples=examples(60))
@given(host=ODD_TEXT.filter(lambda h: h.isascii() and h.isprintable()))
def test_any_host_header(kit: IdleKit, host: str) -> None:
    """Only a loopback name may reach a control endpoint (the rest is a 403 or aiohttp's 400)."""
    status = kit.post("/api/session/stop", b"", {"Host": host})
    assert status in (200, 400, 403)
    if status == 200:
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        assert name.strip("[]").lower() in ("localhost", "::1") or name.startswith("127.")
