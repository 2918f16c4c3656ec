"""Every WHEP refusal and the control API through the real HTTP server (aiohttp on 127.0.0.1).

Refusals must have the right status, a one-line reason a player's developer can act on, CORS
headers (a pupil page may live on another origin), and nothing internal: no traceback, no path,
no exception name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDictProxy

from agent.config import config_from_dict
from agent.errors import Forbidden
from agent.http.app import (
    errors_middleware,
    get_status,
    kiosk_page,
    make_app,
    post_start,
    post_stop,
    require_local,
)
from agent.session import ClassSession
from agent.webrtc.sdp import MAX_OFFER_BYTES
from kitsys.http import is_loopback as _is_loopback
from tests.conftest import AgentFactory, LiveAgent, chrome_offer_on_loopback, until

SDP = {"Content-Type": "application/sdp"}
CHROME_OFFER = chrome_offer_on_loopback()
UNKNOWN_TOKEN = "A" * 32


async def post(
    agent: LiveAgent, path: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, str, CIMultiDictProxy[str]]:
    url = path if path.startswith("http") else agent.base_url + path
    async with agent.http.post(url, data=body, headers=SDP if headers is None else headers) as r:
        return r.status, await r.text(), r.headers


def path_of(url: str) -> str:
    return "/" + url.split("/", 3)[3]


def assert_refusal(status: int, body: str, headers: CIMultiDictProxy[str], expected: int) -> None:
    """A WHEP refusal: the status, one plain-text line, CORS, nothing internal."""
    assert status == expected, body
    assert headers["Content-Type"].startswith("text/plain")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert body.endswith("\n") and body.count("\n") == 1 and len(body) < 200
    for leak in ("Traceback", 'File "', "/work", "site-packages", ".py", "Error", "Exception"):
        assert leak not in body, body


# -- tokens: unknown, not live, expired -------------------------------------------------------


async def test_idle_class_answers_409_for_any_token_it_has_not_expired(agent: LiveAgent) -> None:
    """While idle the server cannot tell a mistyped link from a link to the next class (the
    token does not exist before Start): check_token answers "not live" (409) unless the token
    belongs to a class that has ended."""
    for token in (UNKNOWN_TOKEN, "x", "a" * 2000, "caf%C3%A9"):
        status, body, headers = await post(agent, "/whep/" + token, CHROME_OFFER)
        assert_refusal(status, body, headers, 409)
        assert body == "the class is not live\n"
    assert agent.session.viewers == {}


async def test_unknown_token_while_live_is_404(agent: LiveAgent) -> None:
    whep = await agent.start()
    token = whep.rsplit("/", 1)[1]
    for wrong in (UNKNOWN_TOKEN, token[:-1], token + "x", token.upper(), "a" * 2000):
        status, body, headers = await post(agent, "/whep/" + wrong, CHROME_OFFER)
        assert_refusal(status, body, headers, 404)
        assert body == "unknown link\n"
    assert agent.session.viewers == {}


async def test_token_of_an_ended_class_is_expired(agent: LiveAgent) -> None:
    old = path_of(await agent.start())
    await agent.stop()
    status, body, headers = await post(agent, old, CHROME_OFFER)
    assert_refusal(status, body, headers, 404)
    assert body == "this link has expired: the class has ended\n"
    # A new class has a new token; the old link stays expired, the new one works.
    new = path_of(await agent.start())
    assert new != old
    status, body, headers = await post(agent, old, CHROME_OFFER)
    assert_refusal(status, body, headers, 404)
    assert "expired" in body
    status, answer, headers = await post(agent, new, CHROME_OFFER)
    assert status == 201 and answer.startswith("v=0\r\n")
    assert headers["Content-Type"] == "application/sdp"
    assert headers["Location"].startswith("/whep/resource/")


# -- the body: SDP, size, type ----------------------------------------------------------------


def _without(prefix: str) -> bytes:
    return b"\r\n".join(
        line for line in CHROME_OFFER.split(b"\r\n") if not line.startswith(prefix.encode())
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe garbage \x00", "SDP offer is not UTF-8 text"),
        (b"hello", "SDP offer must start with v=0"),
        (b"", "SDP offer must start with v=0"),
        (b'{"sdp": "v=0"}', "SDP offer must start with v=0"),
        (b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "SDP offer has no media section"),
        (b"v=0\r\nthis is not sdp\r\n", "SDP line 2 is not of the form x=value"),
        (_without("a=ice-ufrag"), "m-line 0 (video): missing a=ice-ufrag or a=ice-pwd"),
        (_without("a=fingerprint"), "m-line 0 (video): missing a=fingerprint"),
        (CHROME_OFFER.replace(b"a=recvonly", b"a=sendonly"), "SDP offer asks for no audio or"),
    ],
)
async def test_malformed_offer_is_400_with_reason(
    agent: LiveAgent, body: bytes, reason: str
) -> None:
    whep = await agent.start()
    status, text, headers = await post(agent, path_of(whep), body)
    assert_refusal(status, text, headers, 400)
    assert text.startswith(reason)
    assert agent.session.viewers == {}


async def test_offer_that_aiortc_cannot_negotiate_is_400(agent: LiveAgent) -> None:
    whep = await agent.start()
    # Passes our checks, but aiortc needs RTP/RTCP multiplexing (as every browser offers).
    body = CHROME_OFFER.replace(b"a=rtcp-mux\r\n", b"")
    status, text, headers = await post(agent, path_of(whep), body)
    assert_refusal(status, text, headers, 400)
    assert text == "SDP offer could not be negotiated\n"
    await until(lambda: not agent.session.viewers, 2, "the refused viewer is gone")


async def test_body_over_64_kib_is_413(agent: LiveAgent) -> None:
    path = path_of(await agent.start())
    filler = b"a=x-filler:" + b"y" * 100 + b"\r\n"
    big = CHROME_OFFER + filler * (MAX_OFFER_BYTES // len(filler))
    assert len(big) > MAX_OFFER_BYTES
    status, text, headers = await post(agent, path, big)  # with Content-Length
    assert_refusal(status, text, headers, 413)
    assert text == f"body larger than {MAX_OFFER_BYTES} bytes\n"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    status, text, headers = await post(agent, path, chunks())
    assert_refusal(status, text, headers, 413)
    # Exactly at the limit is read, then judged on its content.
    at_limit = b"v=0\r\na=" + b"z" * (MAX_OFFER_BYTES - 9) + b"\r\n"
    assert len(at_limit) == MAX_OFFER_BYTES
    status, text, headers = await post(agent, path, at_limit)
    assert_refusal(status, text, headers, 400)
    assert agent.session.viewers == {}


async def test_offer_arriving_in_pieces_is_read_whole(agent: LiveAgent) -> None:
    """A body that arrives over several TCP segments (slow link, chunked upload) is one offer."""
    path = path_of(await agent.start())

    async def slowly() -> AsyncIterator[bytes]:
        for start in range(0, len(CHROME_OFFER), 1500):
            yield CHROME_OFFER[start : start + 1500]
            await asyncio.sleep(0.01)

    status, answer, _ = await post(agent, path, slowly())
    assert status == 201, answer
    assert answer.count("m=") == 3


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "application/octet-stream", "sdp"]
)
async def test_wrong_content_type_is_415(agent: LiveAgent, content_type: str) -> None:
    path = path_of(await agent.start())
    status, text, headers = await post(agent, path, CHROME_OFFER, {"Content-Type": content_type})
    assert_refusal(status, text, headers, 415)
    assert text == "Content-Type must be application/sdp\n"
    # A charset parameter is fine.
    status, _, _ = await post(
        agent, path, CHROME_OFFER, {"Content-Type": "application/sdp; charset=utf-8"}
    )
    assert status == 201


async def test_missing_content_type_is_415(agent: LiveAgent) -> None:
    path = path_of(await agent.start())
    async with agent.http.post(
        agent.base_url + path, data=CHROME_OFFER, skip_auto_headers=["Content-Type"]
    ) as response:
        text = await response.text()
        assert_refusal(response.status, text, response.headers, 415)


async def test_full_class_is_503(make_agent: AgentFactory) -> None:
    agent = await make_agent(webrtc={"max_viewers": 1})
    path = path_of(await agent.start())
    status, _, _ = await post(agent, path, CHROME_OFFER)
    assert status == 201
    status, text, headers = await post(agent, path, CHROME_OFFER)
    assert_refusal(status, text, headers, 503)
    assert text == "this class is full\n"
    assert len(agent.session.viewers) == 1


async def test_unexpected_errors_are_500_without_details(
    agent: LiveAgent, caplog: pytest.LogCaptureFixture
) -> None:
    path = path_of(await agent.start())

    async def broken(
        token: str, body: bytes, peer: str | None = None, key: str | None = None
    ) -> Any:
        raise RuntimeError("/etc/secret/device.conf: kaboom")

    with mock.patch.object(agent.session, "add_viewer", broken), caplog.at_level(logging.ERROR):
        status, text, headers = await post(agent, path, CHROME_OFFER)
    assert_refusal(status, text, headers, 500)
    assert text == "internal error\n"
    assert "kaboom" not in text and "secret" not in text
    assert any("kaboom" in str(r.exc_info) for r in caplog.records)  # logged, not sent


# -- the resource: DELETE, PATCH, OPTIONS -----------------------------------------------------


async def test_delete(agent: LiveAgent) -> None:
    path = path_of(await agent.start())
    async with agent.http.delete(agent.base_url + "/whep/resource/nope") as r:
        body = await r.text()
        assert_refusal(r.status, body, r.headers, 404)
        assert body == "unknown WHEP session\n"
    status, _, headers = await post(agent, path, CHROME_OFFER)
    assert status == 201
    resource = agent.base_url + headers["Location"]
    assert len(agent.session.viewers) == 1
    async with agent.http.delete(resource) as r:
        assert r.status == 200
        assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert agent.session.viewers == {}
    async with agent.http.delete(resource) as r:  # already gone
        assert_refusal(r.status, await r.text(), r.headers, 404)


async def test_get_tells_a_page_whether_the_kit_still_knows_it(agent: LiveAgent) -> None:
    """What a page whose packets stopped asks: 404 "gone" means the kit restarted (or the
    session ended) and the page reconnects at once (docs/recovery.md)."""
    path = path_of(await agent.start())
    _, _, headers = await post(agent, path, CHROME_OFFER)
    async with agent.http.get(agent.base_url + headers["Location"]) as r:
        assert r.status == 204 and r.headers["Cache-Control"] == "no-store"
    async with agent.http.get(agent.base_url + "/whep/resource/nope") as r:
        assert_refusal(r.status, await r.text(), r.headers, 404)
        assert r.headers["X-Class-State"] == "gone"


async def test_patch_is_405(agent: LiveAgent) -> None:
    path = path_of(await agent.start())
    _, _, headers = await post(agent, path, CHROME_OFFER)
    for resource in ("/whep/resource/nope", headers["Location"]):
        async with agent.http.patch(
            agent.base_url + resource,
            data=b"a=ice-ufrag:x\r\n",
            headers={"Content-Type": "application/trickle-ice-sdpfrag"},
        ) as r:
            body = await r.text()
            assert_refusal(r.status, body, r.headers, 405)
            assert r.headers["Allow"] == "GET, DELETE"
            assert "trickle ICE" in body
    assert len(agent.session.viewers) == 1  # PATCH changed nothing


@pytest.mark.parametrize("live", [False, True])
async def test_options_and_cors_preflight(agent: LiveAgent, live: bool) -> None:
    token = path_of(await agent.start()).rsplit("/", 1)[1] if live else UNKNOWN_TOKEN
    preflight = {
        "Origin": "https://ent.example.org",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    for path in (f"/whep/{token}", "/whep/resource/nope"):
        async with agent.http.options(agent.base_url + path, headers=preflight) as r:
            assert r.status == 204
            h = r.headers
            assert h["Access-Control-Allow-Origin"] == "*"
            assert {"POST", "DELETE", "PATCH", "OPTIONS"} <= {
                m.strip() for m in h["Access-Control-Allow-Methods"].split(",")
            }
            assert "content-type" in h["Access-Control-Allow-Headers"].lower()
            assert "Location" in h["Access-Control-Expose-Headers"]
            assert h["Accept-Post"] == "application/sdp"
    # The headers a cross-origin page needs are also on the 201 itself.
    if live:
        status, _, headers = await post(agent, f"/whep/{token}", CHROME_OFFER)
        assert status == 201
        assert headers["Access-Control-Allow-Origin"] == "*"
        assert "Location" in headers["Access-Control-Expose-Headers"]


# -- control: loopback only, idempotent, status shape -----------------------------------------


@pytest.mark.parametrize(
    ("remote", "local"),
    [
        ("127.0.0.1", True),
        ("127.45.6.7", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4 caller of a dual-stack [::] listener
        ("192.0.2.7", False),
        ("10.0.0.12", False),
        ("192.168.1.20", False),
        ("::ffff:192.0.2.7", False),
        ("fe80::1%eth0", False),
        ("2001:db8::1", False),
        ("0.0.0.0", False),
        ("localhost", False),  # a name, never an address we would get from a socket
        ("", False),
        (None, False),
    ],
)
def test_is_loopback(remote: str | None, local: bool) -> None:
    assert _is_loopback(remote) is local


def _request_from(peer: tuple[str, int] | None, method: str, path: str, app: Any) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: (
        peer if key == "peername" else default
    )
    # A header a proxy would add must not make a remote caller local.
    headers = {"X-Forwarded-For": "127.0.0.1", "Forwarded": "for=127.0.0.1"}
    return make_mocked_request(method, path, headers, app=app, transport=transport)


@pytest.mark.parametrize(
    ("method", "path", "handler"),
    [
        ("GET", "/api/status", get_status),
        ("POST", "/api/session/start", post_start),
        ("POST", "/api/session/stop", post_stop),
        ("GET", "/", kiosk_page),
    ],
)
async def test_control_refuses_remote_callers(method: str, path: str, handler: Any) -> None:
    session = ClassSession(config_from_dict({"webrtc": {"host_addresses": ["127.0.0.1"]}}), "")
    app = make_app(session)
    for peer in (("192.0.2.7", 40000), ("::ffff:10.1.2.3", 40000, 0, 0), None):
        request = _request_from(peer, method, path, app)  # type: ignore[arg-type]
        with pytest.raises(Forbidden):
            require_local(request)
        response = await errors_middleware(request, handler)
        assert isinstance(response, web.Response) and response.status == 403
        assert response.content_type == "application/json"
        assert response.text == '{"error": "control is only accepted from the kit itself"}'
    assert session.state == "idle"  # a refused start started nothing
    local = _request_from(("127.0.0.1", 40000), method, path, app)
    require_local(local)  # no exception


async def test_start_and_stop_are_idempotent(agent: LiveAgent) -> None:
    assert (await agent.status())["session"]["state"] == "idle"
    async with agent.http.post(agent.base_url + "/api/session/stop") as r:  # stop while idle
        assert r.status == 200 and (await r.json())["session"]["state"] == "idle"
    first = await agent.start()
    threads_before = sorted(t for t in _media_threads())
    async with agent.http.post(agent.base_url + "/api/session/start") as r:
        assert r.status == 200
        body = await r.json()
    assert body["session"]["state"] == "live"
    assert body["session"]["whep_url"] == first  # same class, same token
    assert sorted(_media_threads()) == threads_before  # no second set of sources/encoders
    starts = await asyncio.gather(*(agent.start() for _ in range(3)))  # concurrent presses
    assert set(starts) == {first}
    await asyncio.gather(agent.stop(), agent.stop())
    await agent.stop()
    status = await agent.status()
    assert status["session"]["state"] == "idle" and status["session"]["whep_url"] is None
    assert not _media_threads()


def _media_threads() -> list[str]:
    from tests.conftest import media_threads

    return media_threads()


async def test_status_shape(agent: LiveAgent) -> None:
    idle = await agent.status()
    assert set(idle) == {
        "session",
        "sources",
        "encoders",
        "viewers",
        "pupils",
        "class",
        "network",
        "language",
        "problems",
        "software",
    }
    assert idle["class"] == {
        "waiting_room": False,
        "locked": False,
        "shown": None,
        "floor": [],
        "floor_max": 1,
        "questions": [],
    }
    assert idle["network"] == {
        "reach": "unknown",
        "turn_error": "",
        "probed_at": 0,
        "paths": {},
        "servers": False,
    }
    session = idle["session"]
    assert {"state", "join_url", "whep_url", "viewers"} <= set(session)
    assert session["state"] == "idle"
    assert session["join_url"] is None and session["whep_url"] is None
    assert session["viewers"] == 0
    assert [s["id"] for s in idle["sources"]] == ["camera", "document", "microphone"]
    for source in idle["sources"]:
        assert {"id", "state"} <= set(source)
        assert source["state"] == "ok" and source["capturing"] is False
    assert idle["encoders"] == [] and idle["viewers"] == []

    await agent.start()
    live = await agent.status()
    assert set(live) == set(idle)
    session = live["session"]
    assert session["state"] == "live" and session["viewers"] == 0
    token = session["join_url"].rsplit("/", 1)[1]
    assert session["join_url"] == f"{agent.base_url}/join/{token}"
    assert session["whep_url"] == f"{agent.base_url}/whep/{token}"
    assert len(token) >= 22 and token.replace("-", "").replace("_", "").isalnum()  # ≥ 128 bits
    assert [s["id"] for s in live["sources"]] == ["camera", "document", "microphone"]
    for source in live["sources"]:
        assert {"id", "state"} <= set(source) and source["state"] == "ok"
    video = {e["source"]: e for e in live["encoders"] if e["codec"] == "h264"}
    assert set(video) == {"camera", "document"}
    assert (video["camera"]["width"], video["camera"]["height"]) == (800, 450)
    for encoder in video.values():
        assert {"name", "frames", "keyframes", "forced_keyframes", "bytes", "viewers"} <= set(
            encoder
        )
        assert encoder["viewers"] == 0
    assert [e["codec"] for e in live["encoders"]].count("opus") == 1
    assert live["viewers"] == []

    status, _, headers = await post(agent, path_of(session["whep_url"]), CHROME_OFFER)
    assert status == 201
    with_viewer = await agent.status()
    assert with_viewer["session"]["viewers"] == 1
    (viewer,) = with_viewer["viewers"]
    assert viewer["id"] == headers["Location"].rsplit("/", 1)[1]
    assert {"id", "state", "connected_s", "tracks", "link"} <= set(viewer)
    assert viewer["connected_s"] is None  # negotiated, never connected (nobody is there)
    assert viewer["link"] == {  # nothing heard from the pupil yet: the safe start
        "estimate_kbps": 1000,
        "remb_kbps": None,
        "loss_percent": None,
        "rtt_ms": None,
        "resent_bytes": 0,
        "resent_packets": 0,
        "nacks_ignored": 0,
        "nacks_over_budget": 0,
        "layers": {"camera": "mid", "document": "low"},  # the middle level
        "quality": "reduced",
        "allotted_kbps": 560,
        "pace_kbps": 1000,
        "probing": False,
        "padding_bytes": 0,
        "layer_changes": 0,
    }
    assert set(viewer["tracks"]) == {"camera", "document", "microphone"}
    assert viewer["tracks"]["camera"]["codec"] == "h264"
    assert viewer["tracks"]["microphone"]["codec"] == "opus"
    for track in viewer["tracks"].values():
        assert {"codec", "packets", "bytes", "keyframe_requests"} <= set(track)
        assert {"retransmitted", "nacks_ignored", "rtp_packets", "lost"} <= set(track)
