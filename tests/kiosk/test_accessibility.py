"""Accessibility of the kiosk and the pupil page, checked by axe-core (WCAG 2.1 A and AA rules:
labels, names of buttons, contrast, language, landmarks…) in real Chromium, on every screen."""

from __future__ import annotations

from typing import Any

from axe_playwright_python.async_playwright import Axe

from tests.chromium import BROWSER_MARKS, open_kiosk, open_pupil_page, stats_until
from tests.conftest import LiveAgent
from tests.kiosk.test_class_in_browsers import PHONE, frames

pytestmark = BROWSER_MARKS

WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}}


async def violations(page: Any) -> list[str]:
    """Every WCAG A/AA violation axe finds, as "rule (impact): the elements" lines."""
    results = await Axe().run(page, options=WCAG)
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
    ]


async def test_kiosk_and_pupil_page_pass_axe(agent: LiveAgent, browser: Any) -> None:
    kiosk = await open_kiosk(browser, agent.base_url)
    await kiosk.wait_for_selector("body[data-view=idle]")
    await kiosk.wait_for_selector("#devices li")
    assert await violations(kiosk) == []

    await kiosk.click("#start")
    await kiosk.wait_for_selector("body[data-view=live]", timeout=20_000)
    join_url = agent.session.join_url
    assert join_url is not None
    pupil = await open_pupil_page(browser, join_url, viewport=PHONE)
    await stats_until(pupil, lambda s: s["state"] == "connected" and frames(s)["camera"] > 5)
    await kiosk.wait_for_selector("#pupils li")
    assert await violations(kiosk) == []
    assert await violations(pupil) == []
    await pupil.click("#hand")
    await kiosk.wait_for_selector("#pupils li.hand")
    assert await violations(kiosk) == []

    english = await open_pupil_page(browser, join_url, locale="en-GB")
    await english.wait_for_selector("body[data-state=live]", timeout=20_000)
    assert await violations(english) == []
    await kiosk.click("#stop")
    assert await violations(kiosk) == []  # the confirmation dialog
    await kiosk.click("#confirm-stop-button")
    await pupil.wait_for_selector("body[data-state=ended]", timeout=10_000)
    assert await violations(pupil) == []
    for page in (kiosk, pupil, english):
        await page.context.close()


async def test_waiting_room_and_questions_pass_axe(agent: LiveAgent, browser: Any) -> None:
    """The screens of issue 17: the kiosk with pupils waiting and questions, the pupil page in
    the waiting room, with a question shown to the class, removed, and refused by a lock."""
    kiosk = await open_kiosk(browser, agent.base_url)
    await kiosk.wait_for_selector("body[data-view=idle]")
    await kiosk.click("#waiting-room-idle")
    await kiosk.wait_for_selector("#waiting-room-idle[aria-pressed=true]")
    assert await violations(kiosk) == []
    await kiosk.click("#start")
    await kiosk.wait_for_selector("body[data-view=live]", timeout=20_000)
    join_url = agent.session.join_url
    assert join_url is not None
    pupil = await open_pupil_page(browser, join_url, viewport=PHONE)
    await pupil.wait_for_selector("body[data-state=lobby]", timeout=20_000)
    await kiosk.wait_for_selector("#lobby-list li")
    assert await violations(pupil) == []
    assert await violations(kiosk) == []
    await kiosk.click("#admit-all")
    await pupil.wait_for_selector("body[data-state=live]", timeout=20_000)
    await pupil.fill("#question", "Pourquoi ?")
    await pupil.click("#question-send")
    await kiosk.wait_for_selector("#questions li")
    assert await violations(kiosk) == []
    await kiosk.click("#questions li button.show")
    await pupil.wait_for_selector("#shown:not([hidden])")
    assert await violations(pupil) == []
    await kiosk.click("#lock")
    await kiosk.click("#pupils li button.remove")
    assert await violations(kiosk) == []  # the confirmation dialog
    await kiosk.click("#confirm-remove-button")
    await pupil.wait_for_selector("body[data-state=removed]", timeout=10_000)
    assert await violations(pupil) == []
    late = await open_pupil_page(browser, join_url, locale="en-GB")
    await late.wait_for_selector("body[data-state=locked]", timeout=20_000)
    assert await violations(late) == []
    for page in (kiosk, pupil, late):
        await page.context.close()
