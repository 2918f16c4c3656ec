"""The kiosk's pupil list shows each pupil's connection quality (issue 14, item 5): the kit's
``quality`` per pupil from ``/api/status`` (``viewers[i].link``), the estimate and loss in the
tooltip, and nothing for a pupil the kit gives no quality for (an older kit, a pupil not judged
yet).

The kiosk reads a real agent's status, live; only the pupils are added to it on the way to the
page (a route), so the test needs no media and every case (an older kit's status, null
figures, nonsense) is exact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.async_api import expect

from tests.chromium import BROWSER_MARKS, open_kiosk, screenshot
from tests.conftest import LiveAgent
from tests.kiosk.test_accessibility import violations

pytestmark = BROWSER_MARKS

LINKS: dict[str, Any] = {
    "p1": {"quality": "full", "estimate_kbps": 2456, "loss_percent": 0.4},
    "p2": {"quality": "reduced", "estimate_kbps": 734, "loss_percent": 6.25},
    "p3": {"quality": "audio-only", "estimate_kbps": 96, "loss_percent": None},
    "p4": {"estimate_kbps": 1500, "loss_percent": 1.0},  # a kit from before "quality"
    "p5": {"quality": None, "estimate_kbps": None, "loss_percent": None},  # not judged yet
    "p6": {"quality": "<b>great</b>", "estimate_kbps": "lots"},  # nonsense: nothing shown
    "p7": None,  # no link at all
}


def with_pupils(status: dict[str, Any], links: dict[str, Any]) -> dict[str, Any]:
    ids = list(links)
    status["pupils"] = [
        {"id": i, "name": f"Élève {i}", "hand_raised_at": None, "connected": True, "path": None}
        for i in ids
    ]
    status["viewers"] = [{"id": i, "state": "connected", "tracks": {}} for i in ids]
    for viewer in status["viewers"]:
        if links[viewer["id"]] is not None:
            viewer["link"] = links[viewer["id"]]
    # A pupil still connecting has no quality shown, whatever its link says.
    status["pupils"].append(
        {"id": "p8", "name": "Élève p8", "hand_raised_at": None, "connected": False, "path": None}
    )
    status["viewers"].append({"id": "p8", "state": "new", "link": {"quality": "full"}})
    return status


async def badges(page: Any) -> dict[str, tuple[str, str | None, str | None]]:
    rows = await page.eval_on_selector_all(
        "#pupils li",
        """(rows) => rows.map((li) => {
             const b = li.querySelector('.link');
             return [li.dataset.id, b ? [b.textContent, b.dataset.quality, b.getAttribute('title')]
                                      : null];
           })""",
    )
    return {row[0]: tuple(row[1]) if row[1] else None for row in rows}


async def test_each_pupils_connection_quality_is_shown(
    agent: LiveAgent, browser: Any, tmp_path: Path
) -> None:
    await agent.start()
    links = {"current": LINKS}
    kiosk = await open_kiosk(browser, agent.base_url)
    errors: list[str] = []
    kiosk.on("pageerror", lambda exc: errors.append(str(exc)))

    async def add_pupils(route: Any) -> None:
        response = await route.fetch()  # the agent's real status
        status = with_pupils(await response.json(), links["current"])
        await route.fulfill(response=response, body=json.dumps(status))

    await kiosk.route("**/api/status", add_pupils)
    await kiosk.wait_for_selector("body[data-view=live]", timeout=20_000)
    await expect(kiosk.locator("#pupils li")).to_have_count(8)
    assert await badges(kiosk) == {
        "p1": ("bonne connexion", "full", "2\u202f500 kbit/s, 0 % perdus"),
        "p2": ("connexion faible : qualité réduite", "reduced", "730 kbit/s, 6 % perdus"),
        "p3": ("connexion très faible : son seulement", "audio-only", "100 kbit/s"),
        "p4": None,
        "p5": None,
        "p6": None,
        "p7": None,
        "p8": None,
    }
    assert await violations(kiosk) == []
    await screenshot(kiosk, "kiosk-link-quality.png", tmp_path)

    await kiosk.click("#lang")
    await expect(kiosk.locator('#pupils li[data-id="p2"] .link')).to_have_text(
        "weak connection: reduced quality"
    )
    shown = await badges(kiosk)
    assert shown["p1"] == ("good connection", "full", "2,500 kbit/s, 0 % lost")
    assert shown["p3"] == ("very weak connection: sound only", "audio-only", "100 kbit/s")
    assert shown["p4"] is None

    # New figures only: the tooltip follows in place, the rows are not rebuilt (a "lower"
    # button being pressed would be lost with its row).
    await kiosk.evaluate("document.querySelector('#pupils li[data-id=\"p1\"]').dataset.kept = 1")
    links["current"] = {**LINKS, "p1": {**LINKS["p1"], "estimate_kbps": 1234, "loss_percent": 2}}
    p1 = kiosk.locator('#pupils li[data-id="p1"] .link')
    await expect(p1).to_have_attribute("title", "1,200 kbit/s, 2 % lost")
    assert await kiosk.locator('#pupils li[data-id="p1"][data-kept="1"]').count() == 1

    # The pupil's connection recovers: the list follows at the next refresh.
    links["current"] = {**LINKS, "p2": {"quality": "full", "estimate_kbps": 3000}}
    await expect(kiosk.locator('#pupils li[data-id="p2"] .link')).to_have_text("good connection")
    await expect(kiosk.locator('#pupils li[data-id="p2"] .link')).to_have_attribute(
        "title", "3,000 kbit/s"
    )
    assert errors == []
    await kiosk.context.close()
