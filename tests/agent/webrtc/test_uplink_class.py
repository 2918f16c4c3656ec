"""The school's uplink budget with a live class: real aiortc pupils share ``[network]
uplink_kbps``; nobody's layers exceed their share; a new budget applies during the class."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import AgentFactory, agent_config, until


async def layers(agent: Any) -> list[dict[str, Any]]:
    return [viewer["link"] for viewer in (await agent.status())["viewers"]]


async def test_pupils_share_the_uplink_and_a_new_budget_applies_at_once(
    make_agent: AgentFactory,
) -> None:
    agent = await make_agent(network={"uplink_kbps": 1300})
    whep = await agent.start()
    pupils = [agent.receiver(whep) for _ in range(2)]
    await asyncio.gather(*(p.connect() for p in pupils))
    await until(lambda: len(agent.session.viewers) == 2, 5, "two pupils")

    shares: list[dict[str, int]] = []
    for _ in range(24):  # 6 s: time for probes and up-switches, were they allowed
        await asyncio.sleep(0.25)
        shares.append(agent.session.share_uplink())
        for link in await layers(agent):
            assert link["layers"]["camera"] != "high", link  # 650 kbit/s each: no top layer
            assert link["allotted_kbps"] <= 650, link
    assert all(sum(s.values()) <= 1_300_000 for s in shares)
    assert {link["quality"] for link in await layers(agent)} == {"reduced"}

    agent.session.reconfigure(agent_config(network={"uplink_kbps": 0}))

    async def all_full() -> bool:
        return all(link["quality"] == "full" for link in await layers(agent))

    for _ in range(60):  # 15 s
        if await all_full():
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"not every pupil on full quality: {await layers(agent)}")
