"""The floor for pupils at home (issue 17): the same turn as on the LAN
(tests/kiosk/test_floor_in_browsers.py), with both pupils' pages opened on the provisioning
server's join link. Only the page and the SDP go through the server: the sendrecv offer must
reach the kit whole and its sendrecv answer come back, the floor messages and the microphone's
sound then flow between Chromium and the kit directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.chromium import BROWSER_MARKS, open_kiosk
from tests.conftest import until
from tests.kiosk.test_floor_in_browsers import (
    SpeakerTap,
    floor_by_touch,
    start_by_touch,
    talk_browser,  # noqa: F401  (fixture)
    tap_speaker,
)
from tests.provisioning.conftest import AgentMaker, LiveServer

pytestmark = BROWSER_MARKS


async def test_floor_by_touch_through_the_server(
    live_server: LiveServer,
    linked_agent: AgentMaker,
    talk_browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    agent = await linked_agent(speaker={"device": "null"})
    kiosk = await open_kiosk(talk_browser, agent.base_url)
    await start_by_touch(kiosk)
    kit = live_server.server.fleet.kits[agent.kit_id]
    await until(lambda: kit.token is not None, 5, "the server knows the class is live")
    tap = SpeakerTap()
    tap_speaker(agent, tap)
    join = agent.session.join_url
    assert join is not None and join.startswith(live_server.url + "/join/")
    await floor_by_touch(agent, kiosk, tap, join, tmp_path)
    await kiosk.context.close()
