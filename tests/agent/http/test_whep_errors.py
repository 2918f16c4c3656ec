"""Every WHEP refusal through the real HTTP server: clear, correct status, nothing leaked."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from agent.errors import Forbidden
from agent.http.app import require_local
from tests.conftest import LiveAgent

SDP = {"Content-Type": "application/sdp"}


async def post(
    agent: LiveAgent, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
    async with agent.http.post(agent.base_url + path, data=body, headers=headers or SDP) as r:
        return r.status, await r.text(), r.headers


def assert_clean(body: str) -> None:
    for leak in ("Traceback", 'File "', "/work", "site-packages", "Exception"):
        assert leak not in body


async def test_not_live_unknown_and_expired_tokens(agent: LiveAgent) -> None:
    status, body, _ = await post(agent, "/whep/" + "x" * 32, b"v=0\r\n")
    assert status == 409 and "not live" in body
    whep = await agent.start()
    token_path = whep.removeprefix(agent.base_url)
    status, body, _ = await post(agent, "/whep/" + "x" * 32, b"v=0\r\n")
    assert status == 404 and "ended" not in body
    await agent.stop()
    status, body, _ = await post(agent, token_path, b"v=0\r\n")
    assert status == 404 and "ended" in body
    assert_clean(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe garbage", "UTF-8"),
        (b"hello", "v=0"),
        (b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "media"),
        (b"v=0\r\nthis is not sdp\r\n", "line 2"),
    ],
)
async def test_malformed_offer_is_400_with_reason(
    agent: LiveAgent, body: bytes, reason: str
) -> None:
    whep = await agent.start()
    status, text, _ = await post(agent, whep.removeprefix(agent.base_url), body)
    assert status == 400 and reason in text
    assert_clean(text)


async def test_size_and_content_type(agent: LiveAgent) -> None:
    path = (await agent.start()).removeprefix(agent.base_url)
    status, text, _ = await post(agent, path, b"v=0\r\n" + b"a=x\r\n" * 20_000)
    assert status == 413
    status, text, _ = await post(agent, path, b"v=0\r\n", {"Content-Type": "application/json"})
    assert status == 415 and "application/sdp" in text
    status, _, headers = await post(agent, path, b"v=0\r\n")
    assert headers["Access-Control-Allow-Origin"] == "*"


async def test_resource_methods(agent: LiveAgent) -> None:
    await agent.start()
    async with agent.http.delete(agent.base_url + "/whep/resource/nope") as r:
        assert r.status == 404
    async with agent.http.patch(agent.base_url + "/whep/resource/nope", data=b"") as r:
        assert r.status == 405
    async with agent.http.options(agent.base_url + "/whep/resource/nope") as r:
        assert r.status == 204 and "Location" in r.headers["Access-Control-Expose-Headers"]


async def test_status_shape_and_idempotent_control(agent: LiveAgent) -> None:
    idle = await agent.status()
    assert idle["session"]["state"] == "idle" and idle["session"]["join_url"] is None
    assert {s["id"] for s in idle["sources"]} == {"camera", "document", "microphone"}
    await agent.start()
    await agent.start()
    live = await agent.status()
    session = live["session"]
    assert session["state"] == "live" and session["viewers"] == 0
    assert session["join_url"].startswith(agent.base_url + "/join/")
    assert session["whep_url"].startswith(agent.base_url + "/whep/")
    assert len(session["join_url"].rsplit("/", 1)[1]) >= 22  # ≥ 128 bits, URL-safe
    assert all(s["state"] == "ok" for s in live["sources"])
    assert {e["codec"] for e in live["encoders"] if "codec" in e} == {"h264", "opus"}
    assert "viewers" in live
    await agent.stop()
    await agent.stop()
    assert (await agent.status())["session"]["state"] == "idle"


def test_control_refuses_remote_callers() -> None:
    request = make_mocked_request("POST", "/api/session/start")
    request._transport_peername = ("192.0.2.7", 5000)  # type: ignore[attr-defined]
    with pytest.raises(Forbidden):
        require_local(request)
