"""Headless Chromium (Debian's) driven by Playwright, kept on loopback.

The tests must stay on loopback, like the agent (``webrtc.host_addresses``). Chromium gathers
127.0.0.1 only once the page may use media devices (granted here; otherwise it offers just the
default route's address), and it gathers every other interface too. So the offer is filtered on
its way out of the page to its loopback candidates, the agent leaves checks from any other
address unanswered, and tests check that the pair in use is 127.0.0.1 on both ends. The pages
themselves run unchanged.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aioice.ice
import pytest

from bench.browser import CHROMIUM, CHROMIUM_ARGS  # one set of Chromium flags for tests and bench

BROWSER_MARKS = [
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


async def open_pupil_page(
    browser: Any,
    url: str,
    locale: str = "fr-FR",
    viewport: dict[str, int] | None = None,
    bypass_csp: bool = True,
    init_script: str | None = None,
) -> Any:
    """A pupil's page in a context of its own. ``init_script`` runs in the page before its own
    scripts. ``bypass_csp``: Playwright's polling (``wait_for_function``) evaluates strings,
    which the pages' Content-Security-Policy rightly forbids; tests of the policy pass False."""
    context = await browser.new_context(
        bypass_csp=bypass_csp,
        locale=locale,
        permissions=["camera", "microphone"],
        viewport=viewport or {"width": 1280, "height": 800},
    )
    page = await context.new_page()

    async def filter_offer(route: Any) -> None:
        request = route.request
        if request.method == "POST":
            await route.continue_(post_data=loopback_only(request.post_data))
        else:
            await route.continue_()

    token = url.rsplit("/", 1)[1]
    await page.route(f"**/whep/{token}", filter_offer)  # the offer only, not the DELETE
    if init_script:
        await page.add_init_script(init_script)
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


async def open_kiosk(
    browser: Any, base_url: str, locale: str = "fr-FR", bypass_csp: bool = True
) -> Any:
    """The teacher's kiosk at its native size (a 10-inch 1280×800 touch screen)."""
    context = await browser.new_context(
        bypass_csp=bypass_csp,
        locale=locale,
        viewport={"width": 1280, "height": 800},
        has_touch=True,
    )
    page = await context.new_page()
    await page.goto(base_url + "/")
    return page


def screenshot_dir() -> Path | None:
    """Where screenshots go: ``$SCREENSHOTS_DIR`` (``make screenshots`` sets docs/screenshots)."""
    value = os.environ.get("SCREENSHOTS_DIR")
    return Path(value) if value else None


async def screenshot(page: Any, name: str, tmp_path: Path) -> Path:
    """Take a screenshot (always, so it is exercised) and keep it where asked."""
    target = (screenshot_dir() or tmp_path) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(target))
    assert target.stat().st_size > 5000, f"{name} looks empty"
    return target


RESOURCE_JS = "() => (typeof session !== 'undefined' && session) ? session.resource : null"


async def room_camera(page: Any) -> tuple[str | None, int, str]:
    """(the page's WHEP resource, room-camera frames decoded, connection state) right now."""
    try:
        stats = await page.evaluate(STATS_JS)
        resource = await page.evaluate(RESOURCE_JS)
    except Exception:  # the page dropped its session while the script ran
        return None, 0, ""
    if not stats:
        return resource, 0, ""
    camera = [t for t in stats["tracks"].values() if t["kind"] == "video"]
    return resource, camera[0]["frames"] if camera else 0, stats["state"]


async def until_playing(page: Any, old_resource: str | None, count: int, timeout: float) -> str:
    """Wait until the page has decoded ``count`` room-camera frames on a WHEP session other
    than ``old_resource`` (it reconnected by itself); returns its resource."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        resource, frames, state = last = await room_camera(page)
        if resource and resource != old_resource and state == "connected" and frames >= count:
            return resource
        await asyncio.sleep(0.05)
    raise AssertionError(f"the pupil did not get pictures again: {last}")
