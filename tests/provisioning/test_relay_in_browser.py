"""A pupil at home: the shipped pupil page, opened on the provisioning server, in real Chromium.

Only the page and the SDP go through the server; the media and the data channel flow between
Chromium and the kit directly (loopback here). The page must behave as on the LAN: play both
cameras, carry the pupil's name and raised hand, and say so when the class ends.
"""

from __future__ import annotations

from typing import Any

from tests.chromium import BROWSER_MARKS, open_pupil_page, stats_until
from tests.conftest import until
from tests.kiosk.test_class_in_browsers import frames, text_of
from tests.provisioning.conftest import AgentMaker, LiveServer

pytestmark = BROWSER_MARKS


async def test_pupil_page_through_the_server(
    live_server: LiveServer, linked_agent: AgentMaker, browser: Any
) -> None:
    agent = await linked_agent()
    whep = await agent.start()
    kit = live_server.server.fleet.kits[agent.kit_id]
    await until(lambda: kit.token is not None, 5, "the server knows the class is live")
    join = whep.replace("/whep/", "/join/")
    assert join.startswith(live_server.url + "/join/") and agent.session.join_url == join

    pupil = await open_pupil_page(browser, join, locale="en-GB")
    await pupil.fill("#name", "Noah")
    await pupil.click("#name-save")
    first = await stats_until(
        pupil, lambda s: s["state"] == "connected" and min(frames(s).values(), default=0) > 5
    )
    await stats_until(
        pupil, lambda s: all(n >= frames(first)[k] + 10 for k, n in frames(s).items())
    )
    await until(
        lambda: [p["name"] for p in agent.session.pupils()] == ["Noah"], 5, "name on the kit"
    )
    await pupil.click("#hand")
    await until(
        lambda: all(p["hand_raised_at"] for p in agent.session.pupils()), 5, "hand on the kit"
    )

    await agent.stop()
    await pupil.wait_for_selector("body[data-state=ended]", timeout=10_000)
    assert "ended" in await text_of(pupil, "#overlay-text")
    await until(lambda: kit.token is None, 5, "the server knows the class ended")

    # Opened again after Stop (a stale link): the server itself says the class ended.
    again = await open_pupil_page(browser, join, locale="en-GB")
    await again.wait_for_selector("body[data-state=ended]", timeout=10_000)
    # A link that never existed is "invalid", not "ended" or "waiting".
    wrong = await open_pupil_page(browser, live_server.url + "/join/no-such-class-token")
    await wrong.wait_for_selector("body[data-state=invalid]", timeout=10_000)
    for page in (pupil, again, wrong):
        await page.context.close()
