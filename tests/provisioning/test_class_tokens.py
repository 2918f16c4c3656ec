"""The server owns which kit created which class: another kit's credential cannot take a class
over, end it, or claim it while its kit is away (issue 13, High 1; docs/security.md).

The attacker is a second enrolled kit speaking the link protocol by hand with its own valid
credential and the victim class's join token (every pupil has it)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from agent.link.credential import Credential, enroll
from kitlink import (
    LINK_PATH,
    Session,
    SessionInfo,
    encode,
    token_digest,
)
from provisioning import store
from tests.conftest import until

from .conftest import AgentMaker, LiveServer, start_server, stop_server
from .wire import hello_for


@asynccontextmanager
async def rogue_link(
    live: LiveServer, credential: Credential, digest: str | None
) -> AsyncIterator[ClientConnection]:
    """A kit's link whose hello says it is live under ``digest``."""
    session: dict[str, Any] = {"state": "live", "token_sha256": digest} if digest else {}
    url = live.url.replace("http://", "ws://") + LINK_PATH
    async with connect(url, open_timeout=5, ping_interval=None) as ws:
        extra = {"session": SessionInfo(**session)} if session else {}
        await ws.send(hello_for(credential.kit_id, credential.secret, **extra))
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        yield ws


async def say_session(ws: ClientConnection, state: str, digest: str | None) -> None:
    await ws.send(encode(Session(session=SessionInfo(state=state, token_sha256=digest))))


async def second_kit(live: LiveServer, school: str = "0751234A") -> Credential:
    return await enroll(live.url, await live.code(school), "rogue")


async def pupil_sees_the_class(agent: Any, whep: str) -> None:
    pupil = agent.receiver(whep)
    await pupil.connect()
    await pupil.wait_frames("camera", 3)
    assert len(agent.session.viewers) >= 1, "the pupil reached another kit"
    await pupil.close()


async def refusals(live: LiveServer) -> list[dict[str, Any]]:
    await live.server.writer.flush()
    entries = await store.list_audit(live.server.engine, 50)
    return [e for e in entries if e["action"] == "class.claim.refused"]


async def test_another_kit_cannot_take_over_or_end_a_live_class(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    victim = await linked_agent()
    whep = await victim.start()
    token = whep.rsplit("/", 1)[1]
    digest = token_digest(token)
    fleet = live_server.server.fleet
    kit = fleet.kits[victim.kit_id]
    await until(lambda: kit.token == digest, 5, "the server knows the class is live")
    rogue = await second_kit(live_server)

    async with rogue_link(live_server, rogue, digest) as ws:  # in its hello …
        await until(lambda: fleet.kits[rogue.kit_id].online, 5, "rogue online")
        assert fleet.by_token[digest] is kit
        await say_session(ws, "live", digest)  # … and in a session message
        await say_session(ws, "idle", None)  # then "ends" it
        await say_session(ws, "live", digest)
        await until(lambda: fleet.claims_refused >= 3, 5, "claims refused")
        assert fleet.by_token[digest] is kit and fleet.owner(digest) == victim.kit_id
        await pupil_sees_the_class(victim, whep)

    entries = await refusals(live_server)
    assert entries, "the refused claim is audited"
    assert entries[0]["actor"] == f"kit:{rogue.kit_id}"
    assert entries[0]["target"] == victim.kit_id
    assert len(entries) == 1, "one audit entry per refused digest, not per message"
    await victim.stop()
    await until(lambda: digest in fleet.expired_tokens, 5, "the class ended")

    async with rogue_link(live_server, rogue, digest):  # an ended class stays its kit's
        await until(lambda: fleet.claims_refused >= 4, 5, "claim of an ended class refused")
        assert digest not in fleet.by_token


async def test_a_class_stays_its_kits_across_a_server_restart(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    """The rogue reconnects first after a restart (the real kit waits out its backoff): the
    binding comes from the database, not from whoever says it first."""
    victim = await linked_agent()
    whep = await victim.start()
    digest = token_digest(whep.rsplit("/", 1)[1])
    kit = live_server.server.fleet.kits[victim.kit_id]
    await until(lambda: kit.token == digest, 5, "the server knows the class is live")
    rogue = await second_kit(live_server)
    port = int(live_server.url.rsplit(":", 1)[1])
    await stop_server(live_server.server, live_server.runner)
    assert victim.uplink is not None
    await victim.uplink.close()  # the real kit stays away until the rogue has tried
    server, runner, _ = await start_server(live_server.options, port)
    live_server.server, live_server.runner = server, runner
    fleet = server.fleet
    assert fleet.owner(digest) == victim.kit_id

    async with rogue_link(live_server, rogue, digest) as ws:
        await until(lambda: fleet.claims_refused >= 1, 5, "claim refused")
        await say_session(ws, "idle", None)
        assert fleet.by_token[digest].id == victim.kit_id
        async with live_server.http.post(
            whep, data=b"v=0\r\n", headers={"Content-Type": "application/sdp"}
        ) as response:  # the class is not reachable, not "ended": pupils keep retrying
            assert response.status == 503, await response.text()

    victim.uplink.start(victim.session)
    await until(lambda: fleet.kits[victim.kit_id].online, 10, "the real kit is back")
    assert fleet.by_token[digest].id == victim.kit_id
    await pupil_sees_the_class(victim, whep)


async def test_a_kit_resumes_its_own_class_and_opens_classes_at_a_bounded_rate(
    live_server: LiveServer,
) -> None:
    await live_server.school("0751234A")
    kit = await second_kit(live_server)
    fleet = live_server.server.fleet
    first = "a" * 64
    async with rogue_link(live_server, kit, first) as ws:
        await until(lambda: fleet.owner(first) == kit.kit_id, 5, "claimed")
        await say_session(ws, "idle", None)
        await say_session(ws, "live", first)  # its own class again (a kit resuming)
        for n in range(30):  # a stolen credential minting classes
            await say_session(ws, "live", f"{n:064x}")
        await until(lambda: fleet.claims_refused >= 1, 5, "the claim budget runs out")
    assert fleet.owner(first) == kit.kit_id and first not in fleet.by_token
    opened = sum(1 for n in range(30) if fleet.owner(f"{n:064x}") == kit.kit_id)
    assert opened <= 10, opened
    await live_server.server.writer.flush()
    rows = await store.load_class_tokens(live_server.server.engine, 0.0)
    assert {r["digest"] for r in rows if r["kit_id"] == kit.kit_id} >= {first}
