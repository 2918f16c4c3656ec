"""The kit's pupil page and its files carry the same headers as the relay's (kitsys/http.py
PAGE_HEADERS): no framing, no MIME sniffing, no referrer, nothing loaded from elsewhere, no
camera or screen."""

from __future__ import annotations

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from agent.http.app import make_app
from agent.session import ClassSession
from bench.browser import CHROMIUM, CHROMIUM_ARGS
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


GET_USER_MEDIA = """async (constraints) => {
    try {
        const stream = await navigator.mediaDevices.getUserMedia(constraints);
        stream.getTracks().forEach((track) => track.stop());
        return "granted";
    } catch (error) {
        return error.name;
    }
}"""


async def test_the_browser_itself_refuses_the_camera_to_the_pupil_page() -> None:
    """Permissions-Policy: even a script injected into the page (or a future bug in it) cannot
    open the pupil's camera or screen; the microphone stays possible for talk-back. Chromium
    here grants every device request it is allowed to (fake devices, fake permission UI)."""
    playwright = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    session = ClassSession(agent_config(), "")
    try:
        async with (
            TestServer(make_app(session), host="127.0.0.1") as server,
            playwright.async_playwright() as pw,
        ):
            args = [*CHROMIUM_ARGS, "--use-fake-device-for-media-stream"]
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=args)
            try:
                page = await browser.new_page()
                await page.goto(str(server.make_url("/join/some-token")))
                video = await page.evaluate(GET_USER_MEDIA, {"video": True})
                audio = await page.evaluate(GET_USER_MEDIA, {"audio": True})
                screen = await page.evaluate(
                    "async () => { try { await navigator.mediaDevices.getDisplayMedia();"
                    " return 'granted'; } catch (error) { return error.name; } }"
                )
            finally:
                await browser.close()
    finally:
        await session.stop()
    assert video == "NotAllowedError"
    assert screen == "NotAllowedError"
    assert audio == "granted"
