"""Real agents, real WebSockets, a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import stat
from typing import Any

from agent.link.credential import CREDENTIAL_FILE
from provisioning import store
from tests.conftest import until

from .conftest import AgentMaker, LiveServer


async def _kit_rows(live: LiveServer) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in await store.load_kits(live.server.engine)}


async def test_enroll_link_and_health_stored(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    agent = await linked_agent(name="Salle 12")
    credential = agent.state_dir / CREDENTIAL_FILE
    assert stat.S_IMODE(credential.stat().st_mode) == 0o600
    kit = live_server.server.fleet.kits[agent.kit_id]
    assert kit.name == "Salle 12" and kit.online
    await until(lambda: live_server.server.writer.reports_stored >= 2, 10, "reports stored")
    rows = await _kit_rows(live_server)
    row = rows[agent.kit_id]
    assert row["online"] and row["health"] is not None
    history = await store.health_history_of(live_server.server.engine, agent.kit_id, 10)
    assert history, "no health history"
    report = history[0]["report"]
    assert report["devices"]["camera"]["state"] == "ok"
    assert report["session"] == {"state": "idle", "viewers": 0, "elapsed_s": 0}
    assert report["memory"]["total_mb"] > 0 and len(report["load"]) == 3


async def test_link_closed_means_offline_at_once(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    agent = await linked_agent()
    kit = live_server.server.fleet.kits[agent.kit_id]
    assert agent.uplink is not None
    await agent.uplink.close()
    await until(lambda: not kit.online, 5, "offline after the link closed")
    await until(lambda: live_server.server.writer.queued == 0, 5, "written")
    row = (await _kit_rows(live_server))[agent.kit_id]
    assert not row["online"] and row["offline_since"] is not None
