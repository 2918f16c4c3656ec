"""Real agents, real WebSockets, a real server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect

from agent.link.credential import CREDENTIAL_FILE, enroll
from kitlink import CLOSE_REVOKED, LINK_PATH, Hello, PushedConfig
from provisioning import store
from provisioning.db import database_url, open_database
from provisioning.fleet import Kit
from tests.conftest import until

from .conftest import AgentMaker, LiveServer, start_server, stop_server
from .wire import hello, hello_for, raw_close


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


async def test_silent_kit_is_marked_offline_and_disconnected(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    """A half-open link (no message, no close) is caught by the sweep within offline_after_s."""
    agent = await linked_agent()
    kit = live_server.server.fleet.kits[agent.kit_id]
    client = agent.link
    # Silence the kit without closing its socket: its health task stops sending.
    report = client.collector.report
    client.collector.report = lambda: (_ for _ in ()).throw(asyncio.CancelledError())
    silent_since = time.monotonic()
    await until(lambda: not kit.online, 8, "offline after silence")
    elapsed = time.monotonic() - silent_since
    offline_after = live_server.server.options.fleet.offline_after_s
    assert elapsed < offline_after + 1.0, elapsed
    client.collector.report = report
    await until(lambda: kit.online, 5, "back online after reconnecting")


async def test_revoke_closes_link_at_once_and_refuses_credential(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    agent = await linked_agent()
    await live_server.admin("root@example.fr")
    status, body = await live_server.call(
        "root@example.fr", "POST", f"/api/v1/kits/{agent.kit_id}/revoke"
    )
    assert status == 200 and body["revoked"] and not body["online"]
    await until(lambda: agent.link.state == "refused", 10, "agent told it is revoked")
    assert "4403" in agent.link.refusal
    # The same credential is refused from now on (a fresh dial, not the closed link).
    code, reason = await raw_close(live_server, hello(agent))
    assert (code, reason) == (CLOSE_REVOKED, "this kit's credential has been revoked")
    entries = (await live_server.call("root@example.fr", "GET", "/api/v1/audit"))[1]["entries"]
    assert any(e["action"] == "kit.revoke" and e["target"] == agent.kit_id for e in entries)


async def test_a_revoke_landing_while_the_welcome_is_sent_wins(
    live_server: LiveServer, linked_agent: AgentMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hello authenticated just before the admin's revoke must not be attached after it:
    the kit would be online again with a revoked credential."""
    agent = await linked_agent()
    fleet = live_server.server.fleet
    kit = fleet.kits[agent.kit_id]
    attach = fleet.attach

    async def revoke_first(target: Kit, link: Any, greeting: Hello) -> None:
        await fleet.revoke(target)  # lands between the hello's check and its attach
        await attach(target, link, greeting)

    monkeypatch.setattr(fleet, "attach", revoke_first)
    code, reason = await raw_close(live_server, hello(agent))
    assert (code, reason) == (CLOSE_REVOKED, "this kit's credential has been revoked")
    assert kit.link is None and not kit.online
    await until(lambda: agent.link.state == "refused", 5, "the real kit refused too")


async def test_config_push_applied_refused_and_deferred(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    agent = await linked_agent()
    kit = live_server.server.fleet.kits[agent.kit_id]
    await until(lambda: kit.config_status == "applied", 5, "first config acknowledged")
    admin = "root@example.fr"
    await live_server.admin(admin)
    # Fleet default, then a school layer, then the kit: the most specific wins.
    await live_server.call(admin, "PUT", "/api/v1/config/fleet/default", {"camera": {"fps": 20}})
    await live_server.call(
        admin, "PUT", "/api/v1/config/school/0751234A", {"camera": {"fps": 15, "width": 640}}
    )
    status, body = await live_server.call(
        admin,
        "PUT",
        f"/api/v1/config/kit/{agent.kit_id}",
        {"kiosk": {"language": "en"}, "network": {"uplink_kbps": 20000}},
    )
    assert status == 200 and body["pushed_to"] == 1
    await until(lambda: kit.applied_config == kit.desired_version, 5, "applied")
    config = agent.session.config
    assert (config.camera.fps, config.camera.width, config.kiosk.language) == (15, 640, "en")
    assert config.network.uplink_kbps == 20000
    good = kit.desired_version

    # Structurally valid, refused by the agent's own schema: odd width.
    await live_server.call(
        admin, "PUT", f"/api/v1/config/kit/{agent.kit_id}", {"camera": {"width": 641}}
    )
    await until(lambda: kit.config_status == "refused", 5, "refused")
    assert "camera.width" in kit.config_reason and "even" in kit.config_reason
    assert kit.applied_config == good and agent.session.config.camera.width == 640
    status, shown = await live_server.call(admin, "GET", f"/api/v1/kits/{agent.kit_id}")
    assert shown["config"]["status"] == "refused" and shown["config"]["applied"] == good
    assert shown["config"]["desired"] != good

    # During a class, a media change waits for the end of the class.
    await live_server.call(
        admin, "PUT", f"/api/v1/config/kit/{agent.kit_id}", {"camera": {"fps": 10}}
    )
    await until(lambda: kit.config_status == "applied", 5, "valid again")
    await agent.start()
    await live_server.call(
        admin, "PUT", f"/api/v1/config/kit/{agent.kit_id}", {"camera": {"fps": 12}}
    )
    await until(lambda: kit.config_status == "deferred", 5, "deferred while live")
    assert agent.session.config.camera.fps == 10
    await agent.stop()
    await until(lambda: kit.config_status == "applied", 5, "applied after Stop")
    assert agent.session.config.camera.fps == 12 and kit.applied_config == kit.desired_version


async def test_pupil_joins_through_the_relay(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    agent = await linked_agent()
    whep = await agent.start()
    assert whep.startswith(live_server.url + "/whep/"), whep
    join = whep.replace("/whep/", "/join/")
    async with live_server.http.get(join) as response:
        assert response.status == 200 and "text/html" in response.headers["Content-Type"]
    kit = live_server.server.fleet.kits[agent.kit_id]
    await until(lambda: kit.token is not None, 5, "the server knows the class is live")
    pupil = agent.receiver(whep)
    await pupil.connect()
    assert pupil.location is not None and pupil.location.startswith(live_server.url)
    await pupil.wait_frames("camera", 5)
    await pupil.wait_frames("document", 2)
    assert len(agent.session.viewers) == 1

    def live_report() -> dict[str, Any] | None:
        report = json.loads(kit.health) if kit.health else None
        live = report and report["session"] == {**report["session"], "state": "live", "viewers": 1}
        return report if live and report["streams"] and report["streams"][0]["fps"] > 0 else None

    await until(lambda: live_report() is not None, 5, "a health report of the live class")
    report = live_report()
    assert report is not None
    streams = {s["source"]: s for s in report["streams"]}
    assert streams["camera"]["codec"] == "h264" and streams["camera"]["bitrate_kbps"] > 0
    assert 0 <= streams["camera"]["loss_percent"] <= 100
    await pupil.close()
    await until(lambda: not agent.session.viewers, 5, "DELETE relayed to the kit")
    await agent.stop()
    await until(lambda: kit.token is None, 5, "the server knows the class ended")
    async with live_server.http.post(
        whep, data=b"v=0\r\n", headers={"Content-Type": "application/sdp"}
    ) as response:
        assert response.status == 404
        assert "expired" in await response.text()
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["X-Class-State"] == "ended"


async def test_server_restart_reconnects_and_loses_nothing(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    agent = await linked_agent()
    server = live_server.server
    await until(lambda: server.fleet.reports_received >= 3, 10, "reports")
    received_before = server.fleet.reports_received
    port = int(live_server.url.rsplit(":", 1)[1])
    await stop_server(server, live_server.runner)  # flushes what is queued
    history = await _history_count(live_server, agent.kit_id)
    assert history >= received_before  # history_every_s = 0: every report is kept
    new_server, runner, _ = await start_server(live_server.options, port)
    live_server.server, live_server.runner = new_server, runner
    # The server marks the kit online before its welcome reaches the kit: wait for both.
    await until(
        lambda: new_server.fleet.kits[agent.kit_id].online and agent.link.connects >= 2,
        10,
        "reconnected",
    )
    assert agent.link.connects == 2  # one redial, not a reconnect storm
    await until(lambda: new_server.writer.reports_stored >= 2, 10, "reports after the restart")
    assert await _history_count(live_server, agent.kit_id) >= history + 2


async def _history_count(live: LiveServer, kit_id: str) -> int:
    engine = await open_database(database_url(live.options.db, live.options.data_dir))
    try:
        return len(await store.health_history_of(engine, kit_id, 100_000))
    finally:
        await engine.dispose()


async def test_without_turn_a_kit_that_knows_ice_servers_gets_an_empty_set(
    live_server: LiveServer,
) -> None:
    """So it keeps its own servers and knows it may send its network report."""
    await live_server.school("0751234A")
    credential = await enroll(live_server.url, await live_server.code("0751234A"))
    url = live_server.url.replace("http://", "ws://") + LINK_PATH
    async with connect(url, open_timeout=5, ping_interval=None) as ws:
        await ws.send(hello_for(credential.kit_id, credential.secret, features=["ice_servers"]))
        async with asyncio.timeout(5):
            frames = [json.loads(await ws.recv()) for _ in range(3)]
    assert [f["type"] for f in frames] == ["welcome", "config", "ice_servers"], frames
    assert frames[2]["ice_servers"] == []


async def pushed_with_and_without(live_server: LiveServer, feature: str) -> dict[bool, Any]:
    """The configuration pushed to a new kit of school 0751234A whose hello lists ``feature``
    (True) and to one whose hello lists nothing (False)."""
    url = live_server.url.replace("http://", "ws://") + LINK_PATH
    pushed: dict[bool, dict[str, Any]] = {}
    for features in ([feature], []):
        credential = await enroll(live_server.url, await live_server.code("0751234A"))
        async with connect(url, open_timeout=5, ping_interval=None) as ws:
            await ws.send(hello_for(credential.kit_id, credential.secret, features=features))
            async with asyncio.timeout(5):
                frames = [json.loads(await ws.recv()) for _ in range(2)]
        assert [f["type"] for f in frames] == ["welcome", "config"], frames
        pushed[bool(features)] = PushedConfig.model_validate(frames[1]["config"]).overlay()
    return pushed


async def test_the_uplink_budget_is_pushed_only_to_kits_that_know_it(
    live_server: LiveServer,
) -> None:
    """A kit from before ``network`` would refuse the whole push (an unknown key) and close the
    link at every push: it gets the rest of its configuration without it."""
    await live_server.school("0751234A")
    admin = "root@example.fr"
    await live_server.admin(admin)
    school = {"camera": {"fps": 15}, "network": {"uplink_kbps": 20000}}
    await live_server.call(admin, "PUT", "/api/v1/config/school/0751234A", school)
    pushed = await pushed_with_and_without(live_server, "network_config")
    assert pushed[True] == school
    assert pushed[False] == {"camera": {"fps": 15}}


async def test_the_waiting_room_default_is_pushed_only_to_kits_that_know_it(
    live_server: LiveServer,
) -> None:
    """``kiosk.waiting_room`` (issue 17) goes only to kits whose hello lists
    ``class_control``: an older kit gets the rest of its ``kiosk`` section."""
    await live_server.school("0751234A")
    admin = "root@example.fr"
    await live_server.admin(admin)
    school = {"camera": {"fps": 15}, "kiosk": {"language": "en", "waiting_room": True}}
    await live_server.call(admin, "PUT", "/api/v1/config/school/0751234A", school)
    pushed = await pushed_with_and_without(live_server, "class_control")
    assert pushed[True] == school
    assert pushed[False] == {"camera": {"fps": 15}, "kiosk": {"language": "en"}}


def test_a_kiosk_section_left_empty_is_not_pushed() -> None:
    from provisioning.fleet import pushable

    desired = {"kiosk": {"waiting_room": False}}
    assert pushable(desired, ()).overlay() == {}
    assert pushable(desired, ("class_control",)).overlay() == desired
