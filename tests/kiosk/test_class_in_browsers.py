"""A whole class in real browsers: the teacher's kiosk and pupils' pages in headless Chromium.

One Chromium, one context per person. The kiosk drives the agent only through its buttons; the
pupil page is the shipped page, unchanged (see tests/chromium.py for the loopback rules).
Screenshots of every screen are taken (and kept in docs/screenshots by ``make screenshots``).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
from playwright.async_api import expect

from tests.chromium import (
    BROWSER_MARKS,
    open_kiosk,
    open_pupil_page,
    screenshot,
    stats_until,
)
from tests.conftest import SMALL_SOURCES, AgentFactory, LiveAgent, until

pytestmark = BROWSER_MARKS

PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1366, "height": 768}


MIDS = {"0": "camera", "1": "document"}


def frames(stats: dict[str, Any]) -> dict[str, int]:
    """Decoded frames per source: the page's offer maps mids 0, 1 to camera, document. A track
    Chromium has no inbound stats for yet (connected, no packet yet) counts 0 frames."""
    tracks = stats["tracks"]
    return {name: int(tracks.get(mid, {}).get("frames", 0)) for mid, name in MIDS.items()}


def audio_energy(stats: dict[str, Any]) -> float:
    return float(sum(t["energy"] for t in stats["tracks"].values() if t["kind"] == "audio"))


async def text_of(page: Any, selector: str) -> str:
    return str(await page.locator(selector).first.text_content() or "").strip()


async def eventually(check: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    """Await ``check()`` every 100 ms until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not true after {timeout} s (last: {last!r})")


def decode_qr(png: bytes) -> str:
    """What a phone reads from the QR code. OpenCV's classic detector misses about 1 % of
    valid codes (measured on 300 random join links), so its ArUco-based one and a 2× view
    are tried too: 0 misses in 1,000."""
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    doubled = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    for view in (image, doubled):
        for detector in (cv2.QRCodeDetector(), cv2.QRCodeDetectorAruco()):
            text, _, _ = detector.detectAndDecode(view)
            if text:
                return str(text)
    return ""


async def whep_status(agent: LiveAgent, token: str) -> int:
    from tests.conftest import chrome_offer_on_loopback

    async with agent.http.post(
        f"{agent.base_url}/whep/{token}",
        data=chrome_offer_on_loopback(),
        headers={"Content-Type": "application/sdp"},
    ) as response:
        return response.status


async def test_a_class_from_start_to_stop(agent: LiveAgent, browser: Any, tmp_path: Path) -> None:
    kiosk = await open_kiosk(browser, agent.base_url)
    # Idle: one big button and the device check; nothing is captured.
    await kiosk.wait_for_selector("body[data-view=idle]")
    await eventually(lambda: kiosk.locator("#devices li[data-state=ok]").count(), what="devices")
    assert await kiosk.locator("#devices li[data-state=ok]").count() == 3
    assert await text_of(kiosk, "#start") == "Démarrer le cours"
    assert (await agent.status())["session"]["state"] == "idle"
    await screenshot(kiosk, "kiosk-idle.png", tmp_path)

    # Start: live, on air, the join link and a QR code of it.
    await kiosk.click("#start")
    await kiosk.wait_for_selector("body[data-view=live]", timeout=15_000)
    assert await kiosk.locator("#onair").is_visible()
    join_url = agent.session.join_url
    assert join_url is not None
    await eventually(lambda: text_of(kiosk, "#join-link"), what="join link")
    assert await text_of(kiosk, "#join-link") == join_url
    await kiosk.wait_for_function("document.getElementById('qr').naturalWidth > 0")
    qr_box = await kiosk.locator("#qr").bounding_box()
    assert qr_box["width"] >= 240, "the QR code must be big enough to scan from the board"
    assert decode_qr(await kiosk.locator("#qr").screenshot()) == join_url

    # A pupil joins with a name: both cameras play, the sound has energy.
    pupil = await open_pupil_page(browser, join_url)
    await pupil.fill("#name", "Léa")
    await pupil.click("#name-save")
    first = await stats_until(
        pupil, lambda s: s["state"] == "connected" and min(frames(s).values(), default=0) > 10
    )
    later = await stats_until(
        pupil,
        lambda s: (
            all(n >= frames(first)[k] + 15 for k, n in frames(s).items()) and audio_energy(s) > 0
        ),
    )
    assert audio_energy(later) > 0
    assert await text_of(pupil, "#status") == "En direct"

    # The kiosk shows who is watching, and previews of both cameras.
    await eventually(lambda: text_of(kiosk, "#pupils li .name"), what="pupil on the kiosk")
    assert await text_of(kiosk, "#pupils li .name") == "Léa"
    assert await text_of(kiosk, "#pupil-count") == "1 élève connecté"
    for source in ("camera", "document"):
        await kiosk.wait_for_function(
            f"document.getElementById('preview-{source}').naturalWidth >= 240"
        )

    # Raise hand: it shows on the kiosk; the teacher lowers it; the pupil's button follows.
    await pupil.click("#hand")
    assert await pupil.get_attribute("#hand", "aria-pressed") == "true"
    await kiosk.wait_for_selector("#pupils li.hand button.lower", timeout=5_000)
    assert await kiosk.locator("#lower-all").is_visible()
    await screenshot(kiosk, "kiosk-live.png", tmp_path)
    await screenshot(pupil, "pupil-desktop.png", tmp_path)
    await kiosk.click("#pupils li.hand button.lower")
    await pupil.wait_for_selector("#hand[aria-pressed=false]", timeout=5_000)
    await kiosk.wait_for_selector("#pupils li:not(.hand)", timeout=5_000)
    assert all(p["hand_raised_at"] is None for p in (await agent.status())["pupils"])

    # Mute: pupils get silence, the kiosk says so; unmute.
    await kiosk.click("#mute")
    await eventually(lambda: text_of(kiosk, ".problem"), what="muted warning")
    assert (await agent.status())["session"]["muted"] is True
    await kiosk.click("#mute")
    await kiosk.wait_for_selector("#mute[aria-pressed=false]")

    # Stop needs a confirmation; cancelling keeps the class going.
    await kiosk.click("#stop")
    assert await kiosk.locator("#confirm-stop").is_visible()
    await kiosk.click("#cancel-stop")
    assert agent.session.join_url == join_url
    await kiosk.click("#stop")
    await kiosk.click("#confirm-stop-button")
    await kiosk.wait_for_selector("body[data-view=idle]", timeout=15_000)
    assert not await kiosk.locator("#onair").is_visible()

    # The pupil is told the class ended, and the link no longer works.
    await pupil.wait_for_selector("body[data-state=ended]", timeout=10_000)
    assert "terminé" in await text_of(pupil, "#overlay-text")
    token = join_url.rsplit("/", 1)[1]
    assert await whep_status(agent, token) == 404
    await until(lambda: not agent.session.viewers, 5, "viewers gone")
    await kiosk.context.close()
    await pupil.context.close()


async def test_page_opened_before_start_joins_by_itself(
    agent: LiveAgent, browser: Any, tmp_path: Path
) -> None:
    """The link is opened early (same token as when the class starts, as through the server)."""
    token = "early-token-for-this-test-0123456789abcdef"
    agent.session._new_token = lambda: token
    url = f"{agent.base_url}/join/{token}"
    pupil = await open_pupil_page(browser, url, viewport=PHONE)
    await pupil.wait_for_selector("body[data-state=waiting]", timeout=10_000)
    assert "pas encore commencé" in await text_of(pupil, "#overlay-text")
    await agent.start()
    await stats_until(
        pupil,
        lambda s: s["state"] == "connected" and min(frames(s).values(), default=0) > 10,
        timeout=20,
    )
    await pupil.wait_for_selector("body[data-state=live]")
    await screenshot(pupil, "pupil-phone.png", tmp_path)
    # The phone layout: the main view is the full width, nothing overflows sideways.
    width = await pupil.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]
    await pupil.context.close()


async def test_pupil_page_comes_back_after_losing_its_session(
    agent: LiveAgent, browser: Any
) -> None:
    """The kit drops the pupil's WHEP session: the page re-POSTs the same token by itself,
    video resumes, and its name and raised hand come back with it."""
    await agent.start()
    join_url = agent.session.join_url
    assert join_url is not None
    pupil = await open_pupil_page(browser, join_url, locale="en-GB")
    await pupil.fill("#name", "Sam")
    await pupil.click("#name-save")
    await stats_until(pupil, lambda s: s["state"] == "connected" and frames(s)["camera"] > 10)
    await pupil.click("#hand")
    await until(lambda: any(v.hand_raised_at for v in agent.session.viewers.values()), 5, "hand")
    (first_id,) = agent.session.viewers

    await agent.session.remove_viewer(first_id)  # as a DELETE from the server side would

    await until(
        lambda: any(v.id != first_id for v in agent.session.viewers.values()), 15, "rejoined"
    )
    before = await stats_until(pupil, lambda s: s["state"] == "connected" and frames(s)["camera"])
    await stats_until(pupil, lambda s: frames(s)["camera"] >= frames(before)["camera"] + 20)
    assert await text_of(pupil, "#status") == "Live"
    (second,) = agent.session.viewers.values()
    await until(lambda: second.name == "Sam" and second.hand_raised_at is not None, 5, "state")
    await pupil.context.close()


async def test_unknown_link_says_so(agent: LiveAgent, browser: Any) -> None:
    await agent.start()
    pupil = await open_pupil_page(browser, f"{agent.base_url}/join/not-a-real-token")
    await pupil.wait_for_selector("body[data-state=invalid]", timeout=10_000)
    assert "ne marche pas" in await text_of(pupil, "#overlay-text")
    assert not agent.session.viewers
    await pupil.context.close()


async def test_pages_load_nothing_from_elsewhere(agent: LiveAgent, browser: Any) -> None:
    """Every script, style, image and font comes from the kit itself (no CDN), and the pages
    work under their own Content-Security-Policy (nothing it blocks is needed)."""
    await agent.start()
    join_url = agent.session.join_url
    assert join_url is not None
    requested: list[str] = []
    errors: list[str] = []
    for opener in (
        lambda: open_kiosk(browser, agent.base_url, bypass_csp=False),
        lambda: open_pupil_page(browser, join_url, bypass_csp=False),
    ):
        page = await opener()
        page.on("request", lambda r: requested.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        await page.reload()
        await page.wait_for_timeout(2500)
        await page.context.close()
    assert requested
    assert all(url.startswith(agent.base_url) for url in requested), requested
    assert not errors, errors


async def test_kiosk_is_refused_to_other_origins(agent: LiveAgent) -> None:
    """Another site open in the kiosk's browser cannot press Stop (nor Start)."""
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            agent.base_url + "/api/session/start", headers={"Origin": "http://evil.example"}
        ) as response,
    ):
        assert response.status == 403
    assert (await agent.status())["session"]["state"] == "idle"


async def test_quality_is_judged_against_the_rate_the_kit_sends(
    make_agent: AgentFactory, browser: Any
) -> None:
    """A school set to 12 fps: on a clean loopback the page says "good", not "fair" forever
    (it judged 30 fps as the norm before the kit's welcome carried the rate)."""
    agent = await make_agent(camera={**SMALL_SOURCES["camera"], "fps": 12})
    await agent.start()
    assert agent.session.join_url is not None
    pupil = await open_pupil_page(browser, agent.session.join_url)
    await stats_until(pupil, lambda s: s["state"] == "connected" and frames(s)["camera"] > 10)
    quality = pupil.locator("#quality")
    await expect(quality).to_have_attribute("data-level", "good", timeout=10_000)
    await expect(pupil.locator("#quality-text")).not_to_be_empty()
    await pupil.context.close()
