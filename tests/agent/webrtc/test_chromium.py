"""The pupil page in real headless Chromium (Debian's) receives all three tracks through WHEP."""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any

import pytest

from tests.conftest import LiveAgent

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",  # ICE on 127.0.0.1, like the agent in tests
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian chromium missing")

STATS_JS = """
async () => {
  if (typeof session === "undefined" || !session) return null;
  const report = await session.pc.getStats();
  const codecs = {}; const out = {state: session.pc.connectionState, tracks: {}};
  report.forEach((s) => { if (s.type === "codec") codecs[s.id] = s.mimeType; });
  report.forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    out.tracks[s.mid] = {kind: s.kind, frames: s.framesDecoded || 0,
                         energy: s.totalAudioEnergy || 0, packets: s.packetsReceived,
                         codec: codecs[s.codecId]};
  });
  out.status = document.getElementById("status").textContent;
  return out;
}
"""


async def stats_until(page: Any, predicate: Any, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await page.evaluate(STATS_JS)
        if last and predicate(last):
            return dict(last)
        await asyncio.sleep(0.25)
    raise AssertionError(f"Chromium never got there: {last}")


async def test_pupil_page_plays_three_tracks_in_chromium(agent: LiveAgent) -> None:
    from playwright.async_api import async_playwright

    await agent.start()
    join_url = agent.session.join_url
    assert join_url is not None
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(locale="fr-FR")
            await page.goto(join_url)
            first = await stats_until(
                page,
                lambda s: (
                    s["state"] == "connected"
                    and len(s["tracks"]) == 3
                    and all(t["frames"] > 5 or t["kind"] == "audio" for t in s["tracks"].values())
                ),
            )
            await asyncio.sleep(2.0)
            second = await page.evaluate(STATS_JS)
            videos = {mid: t for mid, t in second["tracks"].items() if t["kind"] == "video"}
            assert len(videos) == 2
            for mid, track in videos.items():
                assert track["codec"] == "video/H264"
                assert track["frames"] - first["tracks"][mid]["frames"] >= 10  # both advance
            audio = next(t for t in second["tracks"].values() if t["kind"] == "audio")
            assert audio["codec"] == "audio/opus" and audio["energy"] > 0
            assert second["status"] == "En direct"
            assert agent.session.status()["session"]["viewers"] == 1
        finally:
            await browser.close()
