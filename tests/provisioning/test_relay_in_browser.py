"""A pupil at home: the shipped pupil page, opened on the provisioning server, in real Chromium.

Only the page and the SDP go through the server; the media and the data channel flow between
Chromium and the kit directly (loopback here). The page must behave as on the LAN: play both
cameras, carry the pupil's name and raised hand, and say so when the class ends.
"""

from __future__ import annotations

import json
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


async def test_waiting_room_remove_and_lock_through_the_server(
    live_server: LiveServer, linked_agent: AgentMaker, browser: Any
) -> None:
    """Issue 17 through the relay: the rejoin key reaches the kit, and the kit's refusals
    (``removed``, ``locked``) reach the page with their class state."""
    agent = await linked_agent()
    session = agent.session
    session.set_waiting_room(True)
    whep = await agent.start()
    kit = live_server.server.fleet.kits[agent.kit_id]
    await until(lambda: kit.token is not None, 5, "the server knows the class is live")
    assert "class_control" in kit.features
    join = whep.replace("/whep/", "/join/")

    pupil = await open_pupil_page(browser, join)
    await pupil.wait_for_selector("body[data-state=lobby]", timeout=15_000)
    (viewer,) = session.viewers.values()
    assert viewer.key is not None and viewer.admitted is False  # the key came through
    session.admit(viewer.id)
    await stats_until(pupil, lambda s: min(frames(s).values(), default=0) > 5)

    await session.remove_pupil(viewer.id)
    await pupil.wait_for_selector("body[data-state=removed]", timeout=10_000)
    await pupil.reload()  # the same tab: refused by the kit, through the server
    await pupil.wait_for_selector("body[data-state=removed]", timeout=10_000)
    assert not session.viewers

    session.set_locked(True)
    late = await open_pupil_page(browser, join)
    await late.wait_for_selector("body[data-state=locked]", timeout=10_000)
    assert "verrouillée" in await text_of(late, "#overlay-text")
    assert [e["reason"] for e in session.audit() if e["event"] == "refused"] == [
        "removed",
        "locked",
    ]
    for page in (pupil, late):
        await page.context.close()


async def test_the_server_gets_admission_counts_without_names(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    """The health report's ``classroom`` (docs/protocol.md): counts, never a name; sent
    because this server's welcome listed ``classroom_health``."""
    agent = await linked_agent()
    assert agent.link.collector.classroom is True
    agent.session.set_waiting_room(True)
    whep = await agent.start()
    pupil = agent.receiver(whep, data_channel=True)
    await pupil.connect()
    await until(lambda: pupil.messages, 10, "welcome")
    pupil.channel.send('{"type": "name", "name": "Zoé Secret"}')
    await until(lambda: agent.session.pupils()[0]["name"] == "Zoé Secret", 5, "name")
    kit = live_server.server.fleet.kits[agent.kit_id]

    def counts() -> Any:
        report = json.loads(kit.health or "{}")
        return report.get("classroom")

    await until(lambda: (counts() or {}).get("waiting") == 1, 10, "counts on the server")
    assert counts() == {
        "waiting_room": True,
        "locked": False,
        "waiting": 1,
        "knocked": 1,
        "joined": 0,
        "admitted": 0,
        "removed": 0,
        "refused": 0,
        "asked": 0,
        "spoke": 0,
        "speaking": 0,
    }
    assert "Zoé" not in (kit.health or "")
    await agent.stop()
    await until(lambda: counts() is None, 10, "none while idle")
