"""Every bad input closes with a clear code (WebSocket) or a 4xx (REST); the server stays up."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from yarl import URL

from kitlink import (
    CLOSE_MALFORMED,
    CLOSE_REPLACED,
    CLOSE_TIMEOUT,
    CLOSE_TOO_BIG,
    CLOSE_TOO_FAST,
    CLOSE_UNAUTHORIZED,
    CLOSE_VERSION,
    MAX_MESSAGE_BYTES,
    Health,
    MessageBudget,
    encode,
)
from tests.conftest import chrome_offer_on_loopback, until

from .conftest import AgentMaker, LiveServer
from .wire import hello, hello_for, raw_close

FAKE_SECRET = "x" * 43


@pytest.mark.parametrize(
    ("frames", "code", "reason"),
    [
        (["{not json"], CLOSE_MALFORMED, "not valid JSON"),
        (["[1, 2]"], CLOSE_MALFORMED, "not a JSON object"),
        (['{"v": 1}'], CLOSE_MALFORMED, "no message type"),
        (['{"type": "reboot"}'], CLOSE_MALFORMED, "unknown message type"),
        ([b"\x00\x01"], CLOSE_MALFORMED, "frames must be JSON text"),
        (['{"type": "health", "seq": 1}'], CLOSE_MALFORMED, "invalid"),
        ([hello_for("kit-nobody", FAKE_SECRET)], CLOSE_UNAUTHORIZED, "unknown kit or wrong secret"),
        (
            [hello_for("kit-nobody", FAKE_SECRET).replace('"v":1', '"v":2')],
            CLOSE_VERSION,
            "version",
        ),
        ([], CLOSE_TIMEOUT, "no hello in time"),
        (["x" * (MAX_MESSAGE_BYTES + 10)], CLOSE_TOO_BIG, ""),
    ],
)
async def test_bad_frames_before_hello(
    live_server: LiveServer, frames: list[str | bytes], code: int, reason: str
) -> None:
    got_code, got_reason = await raw_close(live_server, *frames)
    assert got_code == code, (got_code, got_reason)
    assert reason in got_reason
    async with live_server.http.get(live_server.url + "/healthz") as response:
        assert response.status == 200


async def test_bad_frames_after_hello_and_wrong_secret(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    agent = await linked_agent()
    kit_id = agent.kit_id
    kit = live_server.server.fleet.kits[kit_id]
    wrong = hello_for(kit_id, FAKE_SECRET)
    assert (await raw_close(live_server, wrong))[0] == CLOSE_UNAUTHORIZED
    assert kit.link is not None and agent.link.connects == 1, "the real kit was not disturbed"

    bad_report = json.dumps({"type": "health", "seq": 0, "sent_at": 0, "report": {"cpu": 1}})
    code, reason = await raw_close(live_server, hello(agent), bad_report)
    assert code == CLOSE_MALFORMED and reason.startswith("invalid report")
    # That raw peer (same credential) first replaced the agent's link: the agent reconnects.
    await until(lambda: agent.link.connects >= 2 and kit.online, 10, "agent reconnected")

    code, _ = await raw_close(live_server, hello(agent), hello(agent))
    assert code == CLOSE_MALFORMED
    await until(lambda: agent.link.connects >= 3 and kit.online, 10, "agent reconnected")
    assert live_server.server.links.rejected >= 3


async def test_a_flooding_kit_is_closed_and_comes_back(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    """Valid reports, but far too many: the link is closed with 4429, the reports already
    accepted are kept, and the real kit (same credential) redials and is welcome again."""
    agent = await linked_agent()
    kit = live_server.server.fleet.kits[agent.kit_id]
    links = live_server.server.links
    links.budget = lambda now: MessageBudget(now, burst=20, rate=1)
    report = agent.link.collector.report()
    flood = [encode(Health(seq=n, sent_at=time.time(), report=report)) for n in range(200)]
    code, reason = await raw_close(live_server, hello(agent), *flood)
    assert (code, reason) == (CLOSE_TOO_FAST, "too many messages")
    await until(lambda: agent.link.connects >= 2 and kit.online, 10, "agent reconnected")
    async with live_server.http.get(live_server.url + "/healthz") as response:
        assert response.status == 200


async def test_second_connection_replaces_the_first(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    agent = await linked_agent()
    from websockets.asyncio.client import connect

    url = live_server.url.replace("http://", "ws://") + "/link/v1"
    async with connect(url, ping_interval=None) as first:
        await first.send(hello(agent))
        await first.recv()
        async with connect(url, ping_interval=None) as second:
            await second.send(hello(agent))
            await second.recv()
            await first.wait_closed()
            assert first.close_code == CLOSE_REPLACED


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        ({"Content-Type": "application/json"}, b"{nope", 400, "not valid JSON"),
        ({"Content-Type": "text/plain"}, b"{}", 415, "application/json"),
        ({"Content-Type": "application/json"}, b'{"code": "ABCD-EFGH", "x": 1}', 400, "x"),
        ({"Content-Type": "application/json"}, b"{" + b" " * 70_000 + b"}", 413, "larger"),
        ({"Content-Type": "application/json"}, b'{"code": "ABCD-EFGH-IJKL"}', 403, "unknown"),
    ],
)
async def test_enroll_refusals(
    live_server: LiveServer, headers: dict[str, str], body: bytes, status: int, message: str
) -> None:
    async with live_server.http.post(
        live_server.url + "/api/v1/enroll", data=body, headers=headers
    ) as response:
        assert response.status == status
        assert message in (await response.json())["error"]


async def test_enrollment_code_uses_and_expiry(live_server: LiveServer) -> None:
    await live_server.school("0751234A")
    once = await live_server.code("0751234A", uses=1)
    twice = await live_server.code("0751234A", uses=2)
    expired = await live_server.code("0751234A", expires_s=-1)

    async def enroll(code: str) -> int:
        async with live_server.http.post(
            live_server.url + "/api/v1/enroll", json={"code": code.lower().replace("-", " ")}
        ) as response:
            return response.status

    assert [await enroll(once), await enroll(once)] == [201, 403]  # replayed
    assert [await enroll(twice), await enroll(twice), await enroll(twice)] == [201, 201, 403]
    assert await enroll(expired) == 403
    assert len(live_server.server.fleet.kits) == 3


async def test_whep_relay_refusals(live_server: LiveServer, linked_agent: AgentMaker) -> None:
    agent = await linked_agent()
    url = live_server.url + "/whep/no-such-token"
    async with live_server.http.post(
        url, data=b"v=0", headers={"Content-Type": "application/sdp"}
    ) as response:
        assert response.status == 404 and await response.text() == "unknown link\n"
        assert response.headers["X-Class-State"] == "invalid"
        assert "X-Class-State" in response.headers["Access-Control-Expose-Headers"]
    whep = await agent.start()
    kit = live_server.server.fleet.kits[agent.kit_id]
    await until(lambda: kit.token is not None, 5, "live")
    for headers, body, status in [
        ({"Content-Type": "text/plain"}, b"v=0", 415),
        ({"Content-Type": "application/sdp"}, b"x" * 70_000, 413),
        ({"Content-Type": "application/sdp"}, b"not an offer", 400),
        ({"Content-Type": "application/sdp"}, b"\xff\xfe", 400),
    ]:
        async with live_server.http.post(whep, data=body, headers=headers) as response:
            assert response.status == status, (status, await response.text())
            assert "Traceback" not in await response.text()
    async with live_server.http.delete(live_server.url + "/whep/resource/nope") as response:
        assert response.status == 404
    async with live_server.http.patch(live_server.url + "/whep/resource/nope") as response:
        assert response.status == 405
    async with live_server.http.options(whep) as response:
        assert response.status == 204 and response.headers["Access-Control-Allow-Origin"] == "*"


async def test_relay_while_the_kit_is_offline(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    """A live class whose kit lost its link: pupils get 503 at once, not a hang."""
    agent = await linked_agent()
    whep = await agent.start()
    kit = live_server.server.fleet.kits[agent.kit_id]
    await until(lambda: kit.token is not None, 5, "live")
    assert agent.uplink is not None
    await agent.uplink.close()
    await until(lambda: kit.link is None, 5, "offline")
    async with live_server.http.post(
        whep, data=b"v=0\r\n", headers={"Content-Type": "application/sdp"}
    ) as response:
        assert response.status == 503
        assert "not reachable" in await response.text()


async def test_an_offer_arriving_in_pieces_is_read_whole(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    """A pupil on a slow link: the offer's bytes come in several segments, with pauses."""
    agent = await linked_agent()
    whep = await agent.start()
    kit = live_server.server.fleet.kits[agent.kit_id]
    await until(lambda: kit.token is not None, 5, "live")
    offer = chrome_offer_on_loopback()
    url = URL(whep)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    head = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(offer)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + offer[:700])
    await writer.drain()
    for start in range(700, len(offer), 1500):
        await asyncio.sleep(0.1)
        writer.write(offer[start : start + 1500])
        await writer.drain()
    response = await asyncio.wait_for(reader.read(), 15)
    writer.close()
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 201 Created", response[:300]
    assert b"\r\n\r\nv=0" in response
