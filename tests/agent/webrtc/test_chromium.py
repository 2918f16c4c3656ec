"""The pupil page (GET /join/{token}) in real headless Chromium (Debian's) through WHEP.

The test must stay on loopback, like the agent (``webrtc.host_addresses``). Chromium gathers
127.0.0.1 only once the page may use media devices (granted here; otherwise it offers just the
default route's address), and it gathers every other interface too. So the offer is filtered on
its way out of the page to its loopback candidates, the agent leaves checks from any other
address unanswered, and the test checks that the pair in use is 127.0.0.1 on both ends. The
page itself (join.html, join.js, whep.js) runs unchanged.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aioice.ice
import pytest

from tests.conftest import LiveAgent, until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",  # gather 127.0.0.1, like the agent in tests
    "--disable-features=WebRtcHideLocalIpsWithMdns",  # real addresses, no mDNS names
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"{CHROMIUM} is not installed"),
]

STATS_JS = """
async () => {
  if (typeof session === "undefined" || !session) return null;
  const report = await session.pc.getStats();
  const byId = {};
  report.forEach((s) => { byId[s.id] = s; });
  const out = {state: session.pc.connectionState, tracks: {}, pair: null,
               status: document.getElementById("status").textContent, videos: {}};
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      out.tracks[s.mid] = {
        kind: s.kind, frames: s.framesDecoded || 0, packets: s.packetsReceived || 0,
        energy: s.totalAudioEnergy || 0, level: s.audioLevel || 0,
        codec: s.codecId && byId[s.codecId] ? byId[s.codecId].mimeType : null,
      };
    }
    if (s.type === "transport" && s.selectedCandidatePairId) {
      const pair = byId[s.selectedCandidatePairId];
      const local = byId[pair.localCandidateId], remote = byId[pair.remoteCandidateId];
      out.pair = {local: local.address, remote: remote.address, protocol: local.protocol};
    }
  });
  const midOf = (track) => {
    const t = session.pc.getTransceivers().find((t) => t.receiver.track === track);
    return t ? t.mid : null;
  };
  for (const id of ["camera", "document"]) {
    const v = document.getElementById(id);
    out.videos[id] = {width: v.videoWidth, height: v.videoHeight, paused: v.paused,
                      mid: v.srcObject ? midOf(v.srcObject.getVideoTracks()[0]) : null};
  }
  out.audioPaused = document.getElementById("microphone").paused;
  return out;
}
"""


def loopback_only(sdp: str) -> str:
    """The offer with its candidates on 127.0.0.1 only (the test must not use other addresses)."""
    lines = sdp.split("\r\n")
    kept = [
        line
        for line in lines
        if not line.startswith("a=candidate:") or line.split()[4] == "127.0.0.1"
    ]
    assert any(line.startswith("a=candidate:") for line in kept), "no loopback candidate"
    return "\r\n".join(kept)


@pytest.fixture
def loopback_checks_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chromium also checks from its other interfaces to our 127.0.0.1 candidate, and prefers
    them (lower network cost): leave those checks unanswered so only 127.0.0.1 pairs work."""
    original = aioice.ice.Connection.request_received

    def request_received(self: Any, message: Any, addr: tuple[str, int], protocol: Any) -> None:
        if addr[0] == "127.0.0.1":
            original(self, message, addr, protocol)

    monkeypatch.setattr(aioice.ice.Connection, "request_received", request_received)


@pytest.fixture
async def browser(loopback_checks_only: None) -> AsyncIterator[Any]:
    playwright = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    async_playwright = playwright.async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def open_pupil_page(browser: Any, url: str) -> Any:
    context = await browser.new_context(locale="fr-FR", permissions=["camera", "microphone"])
    page = await context.new_page()

    async def filter_offer(route: Any) -> None:
        request = route.request
        if request.method == "POST":
            await route.continue_(post_data=loopback_only(request.post_data))
        else:
            await route.continue_()

    token = url.rsplit("/", 1)[1]
    await page.route(f"**/whep/{token}", filter_offer)  # the offer only, not the DELETE
    await page.goto(url)
    return page


async def stats_until(
    page: Any, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await page.evaluate(STATS_JS)
        if last and predicate(last):
            return dict(last)
        await asyncio.sleep(0.2)
    raise AssertionError(f"Chromium never got there: {last}")


MIDS = {"0": "camera", "1": "document", "2": "microphone"}
"""The page's offer has three m-lines; the answer maps them in order (docs/whep.md). Browsers
give receiver tracks ids of their own, so the mid is how a page tells them apart."""


def videos(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {MIDS[mid]: t for mid, t in stats["tracks"].items() if t["kind"] == "video"}


async def test_pupil_page_plays_three_tracks(agent: LiveAgent, browser: Any) -> None:
    await agent.start()
    join_url = agent.session.join_url
    assert join_url is not None
    deleted: list[str] = []
    remove_viewer = agent.session.remove_viewer

    async def record_delete(viewer_id: str) -> None:
        deleted.append(viewer_id)
        await remove_viewer(viewer_id)

    agent.session.remove_viewer = record_delete  # type: ignore[method-assign]
    page = await open_pupil_page(browser, join_url)

    first = await stats_until(
        page,
        lambda s: (
            s["state"] == "connected"
            and len(s["tracks"]) == 3
            and all(t["frames"] > 30 for t in videos(s).values())
        ),
    )
    assert first["status"] == "En direct"
    assert first["pair"] == {"local": "127.0.0.1", "remote": "127.0.0.1", "protocol": "udp"}
    assert {mid: t["kind"] for mid, t in first["tracks"].items()} == {
        "0": "video",
        "1": "video",
        "2": "audio",
    }
    for track in videos(first).values():
        assert track["codec"] == "video/H264"
    # Each <video> shows its own source at its own size, and plays.
    assert first["videos"]["camera"] == {"width": 800, "height": 450, "paused": False, "mid": "0"}
    assert first["videos"]["document"] == {
        "width": 800,
        "height": 600,
        "paused": False,
        "mid": "1",
    }
    assert first["audioPaused"] is False

    # Frames keep being decoded on both videos, and the audio carries sound.
    second = await stats_until(
        page,
        lambda s: (
            all(
                s_track["frames"] >= videos(first)[name]["frames"] + 15
                for name, s_track in videos(s).items()
            )
            and any(t["kind"] == "audio" and t["energy"] > 0 for t in s["tracks"].values())
        ),
        timeout=10,
    )
    (audio,) = [t for t in second["tracks"].values() if t["kind"] == "audio"]
    assert audio["codec"] == "audio/opus" and audio["packets"] > 50 and audio["energy"] > 0
    status = await agent.status()
    assert status["session"]["viewers"] == 1
    (viewer,) = status["viewers"]
    assert viewer["state"] == "connected"
    assert {name: t["codec"] for name, t in viewer["tracks"].items()} == {
        "camera": "h264",
        "document": "h264",
        "microphone": "opus",
    }

    # Leaving the page ends the WHEP session (DELETE on pagehide).
    await page.goto("about:blank")
    await until(lambda: not agent.session.viewers, 10, "the viewer left")
    await until(lambda: deleted == [viewer["id"]], 5, "the page sent DELETE")
    await page.context.close()


async def test_page_tells_the_pupil_when_the_class_ends(agent: LiveAgent, browser: Any) -> None:
    await agent.start()
    join_url = agent.session.join_url
    assert join_url is not None
    page = await open_pupil_page(browser, join_url)
    await stats_until(
        page, lambda s: s["state"] == "connected" and s["status"] == "En direct", timeout=15
    )
    await agent.stop()
    ended = "Le cours est terminé ou le lien n'est plus valide."
    status = page.locator("#status")
    deadline = time.monotonic() + 20
    while await status.text_content() != ended:
        assert time.monotonic() < deadline, await status.text_content()
        await asyncio.sleep(0.2)
    assert not agent.session.viewers
    await page.context.close()
