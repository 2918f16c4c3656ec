"""A pupil whose browser offers neither H.264 nor VP8, through the provisioning server's relay:
the kit's 415 reaches the page as it is (status, the stable ``unsupported codec:`` body, CORS),
so the page shows "navigateur non compatible" there too (docs/whep.md). Before, the kit
answered 400, relayed as 400, and the page retried for ever."""

from __future__ import annotations

from tests.agent.webrtc.test_unsupported_browser import refused_as_unsupported
from tests.conftest import until

from .conftest import AgentMaker, LiveServer


async def test_the_kits_415_for_a_vp9_av1_offer_is_relayed(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    agent = await linked_agent()
    whep = await agent.start()
    assert whep.startswith(live_server.url + "/whep/"), whep  # the server's, not the kit's
    kit = live_server.server.fleet.kits[agent.kit_id]
    await until(lambda: kit.token is not None, 5, "live")
    await refused_as_unsupported(live_server.http, whep)
