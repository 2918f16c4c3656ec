"""The pupil page says plainly when the kit sends it less than full quality (issue 14, items 3
and 5; docs/pupil-channel.md): real headless Chromium, the real page under its own
Content-Security-Policy, the kit's own ``quality`` messages on the data channel."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import expect

from agent.webrtc import pupil_channel
from agent.webrtc.viewer import Viewer
from tests.chromium import BROWSER_MARKS, open_pupil_page
from tests.conftest import LiveAgent, until

pytestmark = BROWSER_MARKS

WORDS = {
    "fr-FR": {
        "reduced": "Connexion faible : qualité réduite",
        "audio-only": "Connexion très faible : son seulement",
    },
    "en-GB": {
        "reduced": "Weak connection: reduced quality",
        "audio-only": "Very weak connection: sound only",
    },
}


async def channel_open(agent: LiveAgent) -> Viewer:
    await until(
        lambda: any(
            v.channel is not None and v.channel.readyState == "open"
            for v in agent.session.viewers.values()
        ),
        20,
        "the page's data channel is open",
    )
    (viewer,) = agent.session.viewers.values()
    # From now on only the test speaks: the kit's own control loop (which may already have
    # said "reduced": a pupil starts on a middle layer) would race the messages sent here.
    viewer.control.on_quality = lambda quality: None
    viewer.send(pupil_channel.quality_message("full"))
    return viewer


@pytest.mark.parametrize("locale", ["fr-FR", "en-GB"])
async def test_the_page_says_when_quality_is_reduced(
    agent: LiveAgent, browser: Any, locale: str
) -> None:
    await agent.start()
    assert agent.session.join_url is not None
    page = await open_pupil_page(browser, agent.session.join_url, locale=locale, bypass_csp=False)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    viewer = await channel_open(agent)
    notice = page.locator("#adapted")
    await expect(page.locator("body")).to_have_attribute("data-state", "live", timeout=20_000)
    await expect(notice).to_be_hidden()

    viewer.send(pupil_channel.quality_message("reduced"))
    await expect(notice).to_be_visible()
    await expect(notice).to_have_text(WORDS[locale]["reduced"])
    assert await notice.get_attribute("role") == "status"  # read out, not a dialog

    viewer.send(pupil_channel.quality_message("audio-only"))
    await expect(notice).to_have_text(WORDS[locale]["audio-only"])
    await expect(notice).to_be_visible()

    viewer.send(pupil_channel.quality_message("full"))
    await expect(notice).to_be_hidden()
    await expect(notice).to_have_text("")

    # A level this page does not know (a newer kit) shows nothing rather than junk.
    viewer.send(pupil_channel.quality_message("reduced"))
    await expect(notice).to_be_visible()
    viewer.send('{"type":"quality","level":"<b>x</b>"}')
    await expect(notice).to_be_hidden()
    viewer.send('{"type":"quality","level":3}')
    await expect(notice).to_be_hidden()

    # The rest of the page goes on: the video plays and the status says live.
    await expect(page.locator("#status")).to_have_text("En direct" if locale == "fr-FR" else "Live")
    assert errors == []
    await page.context.close()


async def test_the_notice_goes_with_the_session(agent: LiveAgent, browser: Any) -> None:
    """The class ends: the page shows "ended", not a stale "weak connection"."""
    await agent.start()
    assert agent.session.join_url is not None
    page = await open_pupil_page(browser, agent.session.join_url, bypass_csp=False)
    viewer = await channel_open(agent)
    viewer.send(pupil_channel.quality_message("audio-only"))
    notice = page.locator("#adapted")
    await expect(notice).to_be_visible(timeout=10_000)
    await agent.stop()
    await expect(page.locator("body")).to_have_attribute("data-state", "ended", timeout=10_000)
    await expect(notice).to_be_hidden()
    await page.context.close()
