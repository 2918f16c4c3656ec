"""A browser that offers neither H.264 nor VP8 (issue 18): a 415 it can act on, and the pupil
page says "navigateur non compatible" instead of reconnecting forever.

The offers are real ones with their H.264 and VP8 payload types (and their RTX) taken out, so
only what such a browser would have is left: an aiortc offer rewritten to VP9/AV1, and
Chromium's own offer (it has VP9 and AV1 besides) rewritten on its way out of the real pupil
page. Before, both got a 400, which the page retried every 2 s for ever ("Connexion perdue.
Reconnexion automatique…").
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from agent.webrtc.sdp import UNSUPPORTED_CODEC
from tests.chromium import BROWSER_MARKS, loopback_only
from tests.conftest import LiveAgent

REMOVED = ("h264", "vp8")


def without_codecs(sdp: str, removed: tuple[str, ...] = REMOVED) -> str:
    """``sdp`` with every payload type of ``removed`` codecs (and the RTX of those) gone from
    its m-lines and attributes."""
    names = {m[0]: m[1].lower() for m in re.findall(r"a=rtpmap:(\d+) ([^/\s]+)", sdp)}
    gone = {pt for pt, name in names.items() if name in removed}
    gone |= {apt[0] for apt in re.findall(r"a=fmtp:(\d+) apt=(\d+)", sdp) if apt[1] in gone}
    out = []
    for line in sdp.split("\r\n"):
        if line.startswith("m="):
            fields = line.split(" ")
            out.append(" ".join(fields[:3] + [t for t in fields[3:] if t not in gone]))
            continue
        match = re.match(r"a=(rtpmap|fmtp|rtcp-fb):(\d+)[ ]", line)
        if match and match.group(2) in gone:
            continue
        out.append(line)
    return "\r\n".join(out)


def as_vp9_av1(sdp: str) -> str:
    """An aiortc offer (H.264 and VP8 only) turned into one with only VP9 and AV1: VP8's
    payload types renamed VP9, H.264's AV1 (their fmtp lines dropped)."""
    names = dict(re.findall(r"a=rtpmap:(\d+) ([^/\s]+)", sdp))
    out = []
    for line in sdp.split("\r\n"):
        match = re.match(r"a=(rtpmap|fmtp):(\d+)[ ]", line)
        if match and names.get(match.group(2)) in ("H264", "VP8"):
            if match.group(1) == "fmtp":
                continue
            line = line.replace("H264", "AV1").replace("VP8", "VP9")
        out.append(line)
    return "\r\n".join(out)


async def aiortc_offer() -> str:
    pc = RTCPeerConnection()
    for kind in ("video", "video", "audio"):
        pc.addTransceiver(kind, direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


async def refused_as_unsupported(http: aiohttp.ClientSession, whep: str) -> str:
    """POST a VP9/AV1-only offer: a 415 a page may read (CORS) with the stable reason; its body."""
    offer = as_vp9_av1(await aiortc_offer())
    assert "VP9/90000" in offer and "AV1/90000" in offer and "H264" not in offer
    async with http.post(
        whep, data=offer.encode(), headers={"Content-Type": "application/sdp"}
    ) as response:
        body = await response.text()
        assert response.status == 415, body
        assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert body.startswith(UNSUPPORTED_CODEC + ": m-line 0 (video)"), body
    return body


async def test_an_offer_with_only_vp9_and_av1_gets_a_415(agent: LiveAgent) -> None:
    whep = await agent.start()
    body = await refused_as_unsupported(agent.http, whep)
    assert body.endswith("(this server sends h264, vp8)\n")
    assert agent.session.viewers == {}  # nothing was set up for it
    # The same offer with VP8 back is answered (the refusal is about the codecs only).
    async with agent.http.post(
        whep,
        data=(await aiortc_offer()).encode(),
        headers={"Content-Type": "application/sdp"},
    ) as response:
        assert response.status == 201


@pytest.mark.parametrize(
    ("locale", "words"),
    [("fr-FR", "Navigateur non compatible"), ("en-GB", "Browser not supported")],
)
@BROWSER_MARKS[0]
@BROWSER_MARKS[1]
async def test_the_pupil_page_says_the_browser_is_not_supported(
    agent: LiveAgent, browser: Any, locale: str, words: str
) -> None:
    """Real Chromium on the pupil page, its offer stripped of H.264 and VP8 (VP9, AV1 left):
    the page shows the "not supported" screen, without a spinner, and stops posting offers."""
    await agent.start()
    join_url = agent.session.join_url
    assert join_url is not None
    context = await browser.new_context(
        bypass_csp=True, locale=locale, permissions=["camera", "microphone"]
    )
    page = await context.new_page()
    posts: list[int] = []

    async def strip_codecs(route: Any) -> None:
        request = route.request
        if request.method != "POST":
            await route.continue_()
            return
        offer = without_codecs(loopback_only(request.post_data))
        assert "VP9/90000" in offer and "VP8/" not in offer and "H264/" not in offer
        posts.append(1)
        await route.continue_(post_data=offer)

    await page.route(f"**/whep/{join_url.rsplit('/', 1)[1]}", strip_codecs)
    await page.goto(join_url)
    await page.wait_for_function("document.body.dataset.state === 'unsupported'", timeout=15_000)
    text = await page.text_content("#overlay-text")
    assert text is not None and text.startswith(words), text
    assert await page.is_hidden(".spinner")
    assert await page.text_content("#status") == text
    seen = len(posts)
    await asyncio.sleep(3.0)  # the page used to retry every 0.25–2 s
    assert len(posts) == seen == 1
    assert agent.session.viewers == {}
    await context.close()
