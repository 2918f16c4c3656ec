"""The kiosk's plain-word problems, its state held by the agent, and the pupil's sound button."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.agent.sources.test_camera import write_clip
from tests.chromium import BROWSER_MARKS, open_kiosk, open_pupil_page, stats_until
from tests.conftest import AgentFactory, LiveAgent

pytestmark = BROWSER_MARKS


async def problems(page: Any) -> list[str]:
    return [str(t).strip() for t in await page.locator("#problems .problem").all_text_contents()]


async def test_unplugged_document_camera_is_said_and_clears_by_itself(
    make_agent: AgentFactory, browser: Any, tmp_path: Path
) -> None:
    """Going live with the document camera missing: the class starts with what works, the
    kiosk says which camera, and the message goes away once the camera is back."""
    clip = tmp_path / "document.mp4"
    agent = await make_agent(document={"device": str(clip), "width": 320, "height": 240, "fps": 10})
    kiosk = await open_kiosk(browser, agent.base_url)
    await kiosk.wait_for_selector("#devices li[data-source=document][data-state=missing]")
    assert "débranchée" in str(
        await kiosk.locator("#devices li[data-source=document]").text_content()
    )
    await kiosk.click("#start")
    await kiosk.wait_for_selector("body[data-view=live]", timeout=15_000)
    await kiosk.wait_for_function("document.querySelectorAll('#problems .problem').length > 0")
    assert await problems(kiosk) == ["La caméra document est débranchée."]

    write_clip(clip, 320, 240, frames=20)  # plugged in
    await kiosk.wait_for_function(
        "document.querySelectorAll('#problems .problem').length === 0", timeout=10_000
    )
    assert {s["id"]: s["state"] for s in (await agent.status())["sources"]}["document"] == "ok"
    await kiosk.context.close()


async def test_two_kiosks_and_a_reload_show_the_same_class(agent: LiveAgent, browser: Any) -> None:
    first = await open_kiosk(browser, agent.base_url)
    second = await open_kiosk(browser, agent.base_url, locale="en-GB")
    await first.click("#start")
    for page in (first, second):
        await page.wait_for_selector("body[data-view=live]", timeout=15_000)
    await second.reload()
    await second.wait_for_selector("body[data-view=live]", timeout=5_000)
    link = agent.session.join_url
    for page in (first, second):
        assert str(await page.locator("#join-link").text_content()) == link
    # The English button switches the language; the agent's state is untouched.
    await second.click("#lang")
    assert str(await second.locator("#stop").text_content()) == "End the class"
    await second.click("#stop")
    await second.click("#confirm-stop-button")
    for page in (first, second):
        await page.wait_for_selector("body[data-view=idle]", timeout=15_000)
    await first.context.close()
    await second.context.close()


BLOCK_AUTOPLAY = """
const play = HTMLMediaElement.prototype.play;
let gesture = false;
for (const type of ["pointerdown", "keydown"]) {
  addEventListener(type, (event) => { if (event.isTrusted) gesture = true; }, true);
}
HTMLMediaElement.prototype.play = function () {
  if (!this.muted && !gesture) {
    return Promise.reject(new DOMException("play() needs a user gesture", "NotAllowedError"));
  }
  return play.call(this);
};
"""
"""Chrome's autoplay rule for a site the pupil has not interacted with yet: sound only after a
gesture (a trusted pointer or key event), muted video always. Headless Chromium cannot be made
to apply it here (it waives the rule, e.g. for a page allowed to use the camera, which loopback
ICE in tests requires), so the rule is applied in the page, as the browser reports it: a
NotAllowedError from ``play()``."""


async def test_sound_button_when_the_browser_blocks_autoplay(
    agent: LiveAgent, browser: Any
) -> None:
    await agent.start()
    join_url = agent.session.join_url
    assert join_url is not None
    pupil = await open_pupil_page(browser, join_url, init_script=BLOCK_AUTOPLAY)
    await stats_until(pupil, lambda s: s["state"] == "connected")
    await pupil.wait_for_selector("#unmute:not([hidden])", timeout=10_000)
    assert str(await pupil.locator("#unmute").text_content()) == "Activer le son"
    assert await pupil.evaluate("document.getElementById('microphone').paused")
    assert not await pupil.evaluate("document.getElementById('camera').paused")
    await pupil.click("#unmute")
    await pupil.wait_for_function("!document.getElementById('microphone').paused")
    assert await pupil.locator("#unmute").is_hidden()
    await pupil.context.close()


async def test_the_page_reloads_itself_when_the_agent_is_upgraded(
    agent: LiveAgent, browser: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """install-kit.sh restarts the agent on a new version between classes; the kiosk (Chromium,
    left running) must then take the new version's page rather than keep the old script."""
    kiosk = await open_kiosk(browser, agent.base_url)
    await kiosk.wait_for_selector("body[data-view=idle]")
    await kiosk.evaluate("window.sameDocument = true")
    await kiosk.wait_for_timeout(1500)  # a few refreshes on the same version: no reload
    assert await kiosk.evaluate("window.sameDocument === true")
    monkeypatch.setattr("agent.http.app.__version__", "99.0.0")
    await kiosk.wait_for_function("window.sameDocument === undefined", timeout=5_000)
    await kiosk.wait_for_selector("body[data-view=idle]")
    await kiosk.context.close()
