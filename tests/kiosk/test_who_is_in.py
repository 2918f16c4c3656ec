"""The teacher decides who is in, and pupils ask in writing (issue 17): the kiosk and pupils'
pages in real Chromium, driven only through their buttons.

The kit enforces it: a waiting pupil gets no media packet (the kit's counters and the browser's
inbound-rtp both say 0), a removed tab is refused by the kit on every retry, a locked class
refuses a new pupil's offer, and pupils' words reach the kiosk as text only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.chromium import BROWSER_MARKS, open_kiosk, open_pupil_page, screenshot, stats_until
from tests.conftest import LiveAgent
from tests.kiosk.test_class_in_browsers import eventually, frames, text_of

pytestmark = BROWSER_MARKS


async def pupil_named(browser: Any, url: str, name: str) -> Any:
    page = await open_pupil_page(browser, url)
    await page.fill("#name", name)
    await page.click("#name-save")
    return page


def viewer_named(agent: LiveAgent, name: str) -> Any:
    (viewer,) = [v for v in agent.session.viewers.values() if v.name == name]
    return viewer


async def packets_received(page: Any) -> int:
    stats = await page.evaluate(
        """async () => {
          if (!session) return -1;
          let n = 0;
          (await session.pc.getStats()).forEach((s) => {
            if (s.type === "inbound-rtp") n += s.packetsReceived || 0;
          });
          return n;
        }"""
    )
    return int(stats)


async def test_waiting_room_admit_remove_lock(
    agent: LiveAgent, browser: Any, tmp_path: Path
) -> None:
    kiosk = await open_kiosk(browser, agent.base_url)
    await kiosk.wait_for_selector("body[data-view=idle]")
    await kiosk.click("#waiting-room-idle")  # before the class: for this class
    await kiosk.wait_for_selector("#waiting-room-idle[aria-pressed=true]")
    await kiosk.click("#start")
    await kiosk.wait_for_selector("body[data-view=live]", timeout=15_000)
    assert await kiosk.get_attribute("#waiting-room", "aria-pressed") == "true"
    url = agent.session.join_url
    assert url is not None

    # Two pupils knock: they wait, with their names, and get no media at all.
    lea = await pupil_named(browser, url, "Léa")
    tom = await pupil_named(browser, url, "Tom")
    for page in (lea, tom):
        await page.wait_for_selector("body[data-state=lobby]", timeout=15_000)
        assert "salle d'attente" in await text_of(page, "#overlay-text")
        assert await page.locator("#question-send").is_disabled()
    await eventually(lambda: kiosk.locator("#lobby-list li").count(), what="lobby")
    await eventually(
        lambda: text_of(kiosk, "#lobby-count"), what="count"
    )  # filled on the next refresh
    await kiosk.wait_for_function(
        "document.querySelectorAll('#lobby-list li').length === 2", timeout=5_000
    )
    assert await text_of(kiosk, "#lobby-count") == "2 élèves en attente"
    await screenshot(kiosk, "kiosk-waiting-room.png", tmp_path)
    await screenshot(lea, "pupil-waiting-room.png", tmp_path)
    await kiosk.wait_for_timeout(1500)  # long enough for 20+ frames, were any sent
    for page, name in ((lea, "Léa"), (tom, "Tom")):
        assert await packets_received(page) == 0
        viewer = viewer_named(agent, name)
        assert [t.rtp_packets for t in viewer.tracks] == [0, 0, 0]
        assert viewer.control.pacer.padding_bytes == 0

    # Admit one: Léa plays; Tom still waits, still without packets.
    await kiosk.click("#lobby-list li:has-text('Léa') button.admit")
    await stats_until(lea, lambda s: min(frames(s).values(), default=0) > 5)
    await lea.wait_for_selector("body[data-state=live]")
    assert await packets_received(tom) == 0
    # Admit all: Tom too.
    await kiosk.click("#admit-all")
    await stats_until(tom, lambda s: min(frames(s).values(), default=0) > 5)
    await kiosk.wait_for_selector("#lobby", state="hidden")

    # Remove Tom: his page says so; a reload of the same tab is refused by the kit.
    await kiosk.click("#pupils li:has-text('Tom') button.remove")
    assert "Tom" in await text_of(kiosk, "#confirm-remove-text")
    await kiosk.click("#confirm-remove-button")
    await tom.wait_for_selector("body[data-state=removed]", timeout=10_000)
    assert "retiré" in await text_of(tom, "#overlay-text")
    await tom.reload()
    await tom.wait_for_selector("body[data-state=removed]", timeout=10_000)
    assert not [v for v in agent.session.viewers.values() if v.name == "Tom"]
    assert any(e["event"] == "refused" and e["reason"] == "removed" for e in agent.session.audit())

    # A new private window knocks again, and waits where the teacher sees it.
    again = await pupil_named(browser, url, "Tom bis")
    await again.wait_for_selector("body[data-state=lobby]", timeout=15_000)
    await kiosk.wait_for_selector("#lobby-list li:has-text('Tom bis')", timeout=5_000)

    # Lock: a new pupil is refused, and its page says why; Léa (in already) goes on.
    await kiosk.click("#lock")
    await kiosk.wait_for_selector("#lock[aria-pressed=true]")
    late = await open_pupil_page(browser, url)
    await late.wait_for_selector("body[data-state=locked]", timeout=15_000)
    assert "verrouillée" in await text_of(late, "#overlay-text")
    assert (await agent.status())["class"]["locked"] is True
    before = (await stats_until(lea, lambda s: True))["tracks"]["0"]["frames"]
    await stats_until(lea, lambda s: s["tracks"]["0"]["frames"] > before + 10)

    # The audit holds names for the class's duration only; Stop drops everything.
    events = [e["event"] for e in agent.session.audit()]
    for event in ("knocked", "admitted", "removed", "refused"):
        assert event in events
    await kiosk.click("#stop")
    await kiosk.click("#confirm-stop-button")
    await lea.wait_for_selector("body[data-state=ended]", timeout=10_000)
    await kiosk.wait_for_selector("body[data-view=idle]", timeout=15_000)
    assert agent.session.audit() == []
    assert (await agent.status())["class"] == {
        "waiting_room": False,  # back to the configured default
        "locked": False,
        "shown": None,
        "floor": [],
        "floor_max": 1,
        "questions": [],
    }
    for page in (kiosk, lea, tom, again, late):
        await page.context.close()


HOSTILE = '<img src=x onerror="document.title=\'pwned\'"><a href="https://example.org">clic</a>'


async def ask(page: Any, text: str) -> None:
    """Send a question straight on the page's channel (what a hostile page could do)."""
    await page.evaluate(
        "(text) => session.channel.send(JSON.stringify({type: 'question', text}))", text
    )


async def test_questions_hostile_text_answered_shown(
    agent: LiveAgent, browser: Any, tmp_path: Path
) -> None:
    kiosk = await open_kiosk(browser, agent.base_url)
    await kiosk.wait_for_selector("body[data-view=idle]")
    await kiosk.click("#start")
    await kiosk.wait_for_selector("body[data-view=live]", timeout=15_000)
    url = agent.session.join_url
    assert url is not None
    lea = await pupil_named(browser, url, "Léa")
    tom = await pupil_named(browser, url, "Tom")
    for page in (lea, tom):
        await page.wait_for_selector("body[data-state=live]", timeout=15_000)

    # Through the form: markup is text on the kiosk, never an element, never a link.
    await lea.fill("#question", HOSTILE)
    await lea.click("#question-send")
    await eventually(lambda: text_of(lea, "#question-status"), what="sent")
    assert await text_of(lea, "#question-status") == "Question envoyée à ton enseignant."
    await kiosk.wait_for_selector("#questions li", timeout=5_000)
    assert await text_of(kiosk, "#questions li .text") == HOSTILE
    assert await text_of(kiosk, "#questions li .who") == "Léa demande :"
    assert await kiosk.locator("#questions img, #questions a").count() == 0
    assert await kiosk.title() != "pwned"

    # 10 kB, control characters, then a flood: refused or cleaned, never shown raw.
    await ask(tom, "x" * 10_000)
    await ask(tom, "a\u0000b\u202ec\u0007\n\nd")
    for i in range(40):
        await ask(tom, f"flood {i}")
    await kiosk.wait_for_selector("#questions li:has-text('abc d')", timeout=5_000)
    await kiosk.wait_for_function(
        "document.querySelectorAll('#questions li').length >= 4", timeout=5_000
    )
    await kiosk.wait_for_timeout(1200)  # the kiosk's next refresh
    texts = [t.strip() for t in await kiosk.locator("#questions li .text").all_text_contents()]
    assert texts == [HOSTILE, "abc d", "flood 0", "flood 1"]  # 3 at once, then one per 20 s
    assert all(len(t) <= 280 for t in texts)
    assert await tom.evaluate("session.channel.readyState") == "open"
    assert await text_of(tom, "#question-status") != ""  # told why
    await screenshot(kiosk, "kiosk-questions.png", tmp_path)

    # Show one to the class: both pages show its text (not its asker's name); then answered.
    await kiosk.click("#questions li:has-text('abc d') button.show")
    for page in (lea, tom):
        await page.wait_for_selector("#shown:not([hidden])", timeout=5_000)
        assert await text_of(page, "#shown-text") == "abc d"
        assert "Tom" not in await text_of(page, "#shown")
    await screenshot(lea, "pupil-question-shown.png", tmp_path)
    await kiosk.click("#questions li:has-text('abc d') button.answered")
    await tom.wait_for_selector("#shown", state="hidden", timeout=5_000)
    await eventually(
        lambda: text_of(tom, "#question-status"), what="answered"
    )  # the asker learns it
    await tom.wait_for_function(
        "document.getElementById('question-status').textContent.includes('répondu')",
        timeout=5_000,
    )
    # Dismiss Léa's: it leaves the list; she is told.
    await kiosk.click("#questions li:has-text('clic') button.dismiss")
    await lea.wait_for_function(
        "document.getElementById('question-status').textContent.includes('écarté')",
        timeout=5_000,
    )
    await kiosk.wait_for_function(
        "document.querySelectorAll('#questions li').length === 2", timeout=5_000
    )
    status = await agent.status()
    assert [q["text"] for q in status["class"]["questions"]] == ["flood 0", "flood 1"]
    assert json.dumps(status, ensure_ascii=False).count("Léa") >= 1

    await kiosk.click("#stop")
    await kiosk.click("#confirm-stop-button")
    await kiosk.wait_for_selector("body[data-view=idle]", timeout=15_000)
    status = await agent.status()
    text = json.dumps(status, ensure_ascii=False)
    assert "Léa" not in text and "flood" not in text
    for page in (kiosk, lea, tom):
        await page.context.close()
