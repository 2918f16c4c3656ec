"""TURN credentials end to end on a live server with TURN configured (issue 12): kits that list
the ``ice_servers`` feature get credentials at welcome and at class start, kits that do not
never get the message, and the relay's WHEP answers and OPTIONS carry ``Link: rel="ice-server"``
headers with per-pupil credentials (checked against the secret as coturn does)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import ClientConnection, connect

from kitlink import (
    LINK_PATH,
    Health,
    IceServers,
    Session,
    SessionInfo,
    WhepAnswer,
    WhepOffer,
    encode,
    parse_server_message,
    token_digest,
)
from provisioning import store
from provisioning.fleet import _stored_network
from tests.conftest import chrome_offer_on_loopback, until
from tests.provisioning.conftest import (
    AgentMaker,
    LiveServer,
    admin_page,
    server_options,
    serving,
)
from tests.provisioning.test_ice import SECRET, coturn_accepts, parse_links
from tests.provisioning.test_protocol import REPORT
from tests.provisioning.wire import hello_for

TURN_URLS = (
    "turn:127.0.0.1:3478?transport=udp",
    "turn:127.0.0.1:3478?transport=tcp",
    "turns:127.0.0.1:5349?transport=tcp",
)
CLASS_S = 7200.0
MARGIN_S = 600.0
SCHOOL = "0751234A"


@pytest.fixture
def db_url() -> str:
    """SQLite only: what is tested here does not touch the database's kind."""
    return ""


@pytest.fixture
async def live_server(tmp_path: Path, db_url: str) -> AsyncIterator[LiveServer]:
    """The conftest's live server, with a TURN server configured (no coturn runs: credentials
    are checked the way coturn checks them, tests/provisioning/test_ice.py)."""
    secret = tmp_path / "turn-secret"
    secret.write_bytes(SECRET + b"\n")
    secret.chmod(0o600)
    options = server_options(
        tmp_path,
        db_url,
        turn_urls=TURN_URLS,
        turn_secret_file=secret,
        turn_class_s=CLASS_S,
        turn_margin_s=MARGIN_S,
    )
    async with serving(options) as live:
        yield live


async def enroll_raw(live: LiveServer) -> tuple[str, str]:
    if await store.get_school(live.server.engine, SCHOOL) is None:
        await live.school(SCHOOL)
    code = await live.code(SCHOOL)
    async with live.http.post(live.url + "/api/v1/enroll", json={"code": code}) as response:
        assert response.status == 201, await response.text()
        body = await response.json()
    return body["kit_id"], body["secret"]


async def frames_until(ws: ClientConnection, kind: str, timeout: float = 5.0) -> list[Any]:
    """Server frames, parsed, up to and including the first of type ``kind``."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1].type != kind:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {kind} within {timeout} s (got {[m.type for m in seen]})"
        async with asyncio.timeout(remaining):
            seen.append(parse_server_message(await ws.recv()))
    return seen


def check_turn(message: IceServers, subject: str, now: float) -> int:
    """The STUN URL, then every TURN URL with one credential for ``subject`` that coturn would
    accept; returns the expiry."""
    assert [s.urls for s in message.ice_servers] == [
        ["stun:127.0.0.1:3478"],
        *[[url] for url in TURN_URLS],
    ]
    turn = message.ice_servers[1:]
    assert len({(s.username, s.credential) for s in turn}) == 1
    expiry_text, _, got_subject = turn[0].username.partition(":")
    assert got_subject == subject
    assert coturn_accepts(turn[0].username, turn[0].credential, SECRET, now)
    assert int(expiry_text) == message.expires_at
    assert now + CLASS_S + MARGIN_S - 5 <= message.expires_at <= now + CLASS_S + MARGIN_S + 5
    return message.expires_at


def ws_url(live: LiveServer) -> str:
    return live.url.replace("http://", "ws://") + LINK_PATH


async def test_a_kit_with_the_feature_gets_credentials_at_welcome_and_class_start(
    live_server: LiveServer,
) -> None:
    kit_id, secret = await enroll_raw(live_server)
    token = secrets.token_urlsafe(24)
    digest = token_digest(token)
    async with connect(ws_url(live_server), ping_interval=None) as ws:
        await ws.send(hello_for(kit_id, secret, features=["ice_servers"]))
        frames = await frames_until(ws, "ice_servers")
        assert frames[0].type == "welcome", "ice_servers comes after welcome"
        welcome_set = frames[-1]
        check_turn(welcome_set, kit_id, time.time())
        live = Session(session=SessionInfo(state="live", token_sha256=digest))
        await ws.send(encode(live))
        class_set = (await frames_until(ws, "ice_servers"))[-1]
        check_turn(class_set, "class-" + digest[:16], time.time())

        # The relay's pupils get their own credentials; this raw kit answers the offer.
        async def pupil() -> aiohttp.ClientResponse:
            response = await live_server.http.post(
                live_server.url + "/whep/" + token,
                data=chrome_offer_on_loopback(),
                headers={"Content-Type": "application/sdp"},
            )
            await response.read()
            return response

        asking = asyncio.create_task(pupil())
        offer = (await frames_until(ws, "whep_offer"))[-1]
        assert isinstance(offer, WhepOffer)
        answer = WhepAnswer(req=offer.req, status=201, resource="viewer-1", sdp="v=0\r\n")
        await ws.send(encode(answer))
        response = await asking
        assert response.status == 201
        pupil_username = check_pupil_links(response, live_server.server.fleet.kits[kit_id])
        assert pupil_username.split(":")[1].startswith("pupil-")

    # Reconnecting: the same set again, not a fresh one (one live set per kit).
    async with connect(ws_url(live_server), ping_interval=None) as ws:
        hello = hello_for(kit_id, secret, features=["ice_servers"], session=live.session)
        await ws.send(hello)
        again = (await frames_until(ws, "ice_servers"))[-1]
        assert again == class_set
    assert live_server.server.ice.kit_sets == 2


def check_pupil_links(response: aiohttp.ClientResponse, kit: Any) -> str:
    """STUN, then the three TURN URLs with one fresh pupil credential lasting until the class's
    expected end + margin; returns its username."""
    links = parse_links(", ".join(response.headers.getall("Link")))
    assert [target for target, _ in links] == ["stun:127.0.0.1:3478", *TURN_URLS]
    assert links[0][1] == {"rel": "ice-server"}
    turn = [params for _, params in links[1:]]
    assert all(p["rel"] == "ice-server" and p["credential-type"] == "password" for p in turn)
    assert len({(p["username"], p["credential"]) for p in turn}) == 1
    username, credential = turn[0]["username"], turn[0]["credential"]
    assert coturn_accepts(username, credential, SECRET, time.time())
    assert kit.class_started_at is not None
    expected_end = kit.class_started_at + CLASS_S + MARGIN_S
    assert abs(int(username.split(":")[0]) - expected_end) <= 2
    return username


async def test_a_kit_without_the_feature_never_gets_ice_servers(live_server: LiveServer) -> None:
    old_id, old_secret = await enroll_raw(live_server)
    new_id, new_secret = await enroll_raw(live_server)
    digest = token_digest(secrets.token_urlsafe(24))
    live = encode(Session(session=SessionInfo(state="live", token_sha256=digest)))
    async with (
        connect(ws_url(live_server), ping_interval=None) as old,
        connect(ws_url(live_server), ping_interval=None) as new,
    ):
        plain_hello = hello_for(old_id, old_secret)
        assert "features" not in json.loads(plain_hello)  # as a kit of before this feature
        await old.send(plain_hello)
        await new.send(hello_for(new_id, new_secret, features=["ice_servers"]))
        await frames_until(old, "welcome")
        await frames_until(new, "ice_servers")  # the server does send them, to those who know
        await old.send(live)
        await new.send(encode(Session(session=SessionInfo(state="live", token_sha256="c" * 64))))
        await frames_until(new, "ice_servers")
        kit = live_server.server.fleet.kits[old_id]
        await until(lambda: kit.token == digest, 5, "the old kit's class is live")
        received: list[str] = []
        try:
            async with asyncio.timeout(1.0):
                while True:
                    received.append(json.loads(await old.recv())["type"])
        except TimeoutError:
            pass
        assert "ice_servers" not in received, received


async def test_relay_whep_answers_and_options_carry_link_headers(
    live_server: LiveServer, linked_agent: AgentMaker
) -> None:
    agent = await linked_agent()
    kit = live_server.server.fleet.kits[agent.kit_id]

    def subject() -> str:
        return kit.ice.credential.subject if kit.ice and kit.ice.credential else ""

    # The real agent lists the feature: its own set at welcome, the class's at Start.
    await until(lambda: subject() == agent.kit_id, 5, "the kit's set sent after welcome")
    whep = await agent.start()
    await until(lambda: kit.token is not None, 5, "the server knows the class is live")
    assert kit.token is not None
    await until(lambda: subject() == "class-" + kit.token[:16], 5, "the class's set sent")
    http = live_server.http

    async with http.options(whep) as response:
        assert response.status == 204
        first = check_pupil_links(response, kit)
    minted = 0
    for _ in range(25):  # one client asking over and over: a burst, then no fresh usernames
        async with http.options(whep) as response:
            assert response.status == 204
            minted += "Link" in response.headers
    assert 19 <= minted <= 21, minted  # the burst of 20 (one spent above), refilling 1/s
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    async with http.options(whep, headers=preflight) as response:
        assert response.status == 204 and "Link" not in response.headers  # unreadable anyway
        assert response.headers["Access-Control-Allow-Origin"] == "*"

    offer = {"Content-Type": "application/sdp"}
    async with http.post(whep, data=chrome_offer_on_loopback(), headers=offer) as response:
        assert response.status == 201, await response.text()
        second = check_pupil_links(response, kit)
        assert "Link" in response.headers["Access-Control-Expose-Headers"].split(", ")
        location = response.headers["Location"]
    assert second != first, "each request gets its own pupil credential"
    async with http.delete(live_server.url + location) as response:
        assert response.status == 200

    unknown = live_server.url + "/whep/" + secrets.token_urlsafe(24)
    async with http.options(unknown) as response:
        assert response.status == 204 and "Link" not in response.headers
    async with http.post(unknown, data=chrome_offer_on_loopback(), headers=offer) as response:
        assert response.status == 404 and "Link" not in response.headers

    await agent.stop()
    await until(lambda: kit.token is None, 5, "the server knows the class ended")
    async with http.options(whep) as response:
        assert response.status == 204 and "Link" not in response.headers
    async with http.post(whep, data=chrome_offer_on_loopback(), headers=offer) as response:
        assert response.status == 404 and "Link" not in response.headers
        assert response.headers["X-Class-State"] == "ended"


async def test_turn_settings_are_shown_to_admins_without_the_secret(
    live_server: LiveServer,
) -> None:
    await live_server.admin("root@example.fr")
    status, body = await live_server.call("root@example.fr", "GET", "/api/v1/turn")
    assert status == 200
    assert body == {
        "configured": True,
        "urls": list(TURN_URLS),
        "stun_urls": ["stun:127.0.0.1:3478"],
        "secret_set": True,
        "class_s": CLASS_S,
        "margin_s": MARGIN_S,
        "kit_ttl_s": CLASS_S + MARGIN_S,
        "kit_renew_every_s": MARGIN_S,
    }
    assert SECRET.decode() not in json.dumps(body)
    async with live_server.http.get(live_server.url + "/api/v1/turn") as response:
        assert response.status == 401


async def test_the_kits_network_report_is_kept_and_listed(live_server: LiveServer) -> None:
    kit_id, secret = await enroll_raw(live_server)
    network = {
        "reach": "turn-tcp",
        "turn_error": "",
        "probed_at": time.time(),
        "paths": {"relay/tcp": 3, "host/udp": 1},
    }
    report = {**REPORT, "network": network}
    await live_server.admin("root@example.fr")
    async with connect(ws_url(live_server), ping_interval=None) as ws:
        await ws.send(hello_for(kit_id, secret))
        await frames_until(ws, "welcome")
        await ws.send(encode(Health(seq=0, sent_at=time.time(), report=report)))
        kit = live_server.server.fleet.kits[kit_id]
        await until(lambda: kit.network is not None, 5, "the network part is kept")
        # The list reads the database: the writer's next batch (50 ms) brings the report.
        await until(lambda: live_server.server.writer.queued == 0, 5, "written")
        status, body = await live_server.call("root@example.fr", "GET", "/api/v1/kits")
        assert status == 200
        (listed,) = [k for k in body["kits"] if k["id"] == kit_id]
        assert listed["network"] == network
        # A report without it (a kit before this feature): nothing is made up.
        await ws.send(encode(Health(seq=1, sent_at=time.time(), report=REPORT)))
        await until(lambda: kit.network is None, 5, "an older kit's report has no network")
        await ws.send(encode(Health(seq=2, sent_at=time.time(), report=report)))
        await until(lambda: kit.network is not None, 5, "the network part is back")
    await until(lambda: live_server.server.writer.queued == 0, 5, "written")
    # The latest report is what the fleet reloads at start-up: the network part with it.
    (row,) = [r for r in await store.load_kits(live_server.server.engine) if r["id"] == kit_id]
    reloaded = _stored_network(row["health"])
    assert reloaded is not None and reloaded.model_dump() == network


@pytest.mark.browser
async def test_admin_ui_shows_turn_settings_and_each_schools_network(
    live_server: LiveServer,
) -> None:
    from playwright.async_api import expect

    from tests.kiosk.test_accessibility import violations

    kit_id, secret = await enroll_raw(live_server)
    network = {"reach": "none", "turn_error": "refused", "probed_at": time.time(), "paths": {}}
    await live_server.admin("root@example.fr")
    async with connect(ws_url(live_server), ping_interval=None) as ws:
        await ws.send(hello_for(kit_id, secret))
        await frames_until(ws, "welcome")
        current = {"report": {**REPORT, "network": network}}

        async def keep_reporting() -> None:  # the server drops a kit silent for 3 s
            for seq in range(10_000):
                await ws.send(encode(Health(seq=seq, sent_at=time.time(), **current)))
                await asyncio.sleep(0.3)

        reporting = asyncio.create_task(keep_reporting())
        kit = live_server.server.fleet.kits[kit_id]
        await until(lambda: kit.network is not None, 5, "the network part is kept")
        try:
            async with admin_page(live_server.url) as (page, errors):
                school = page.locator(f'.school[data-school="{SCHOOL}"] h3 .network')
                await expect(school).to_have_text(
                    "réseau de l'école : bloqué : les élèves hors de l'école ne peuvent pas "
                    "se connecter"
                )
                await expect(page.locator("#turn-state")).to_have_text("configuré")
                await page.click("#turn-panel summary")
                facts = page.locator("#turn-facts")
                await expect(facts).to_contain_text(TURN_URLS[2])
                await expect(facts).to_contain_text("présent (jamais affiché)")
                await expect(facts).to_contain_text("2 h au plus) + 10 min")
                assert SECRET.decode() not in await page.content()
                assert await violations(page) == []

                # Live: pupils join through the relay, the kit's next report says how.
                network = {**network, "reach": "turn-tcp", "turn_error": ""}
                network["paths"] = {"relay/tcp": 2, "srflx/udp": 1}
                current["report"] = {**REPORT, "network": network}
                row = page.locator(f'tr[data-kit="{kit_id}"] td.network')
                await expect(row).to_have_text(
                    "réseau : par le relais TURN en TCP seulement · élèves : "
                    "2 par le relais (TCP), 1 en direct (NAT) (UDP)"
                )
                await expect(school).to_have_text(
                    "réseau de l'école : par le relais TURN en TCP seulement"
                )
                await page.click(f'tr[data-kit="{kit_id}"] a')
                await expect(page.locator("#kit-facts")).to_contain_text(
                    "2 par le relais (TCP), 1 en direct (NAT) (UDP)"
                )
                assert await violations(page) == []
                assert errors == []
        finally:
            reporting.cancel()


async def test_a_kits_set_is_renewed_before_expiry_while_the_link_is_up(
    live_server: LiveServer,
) -> None:
    kit_id, secret = await enroll_raw(live_server)
    ice = live_server.server.ice
    offset = [0.0]
    ice.clock = lambda: time.time() + offset[0]  # the wall clock, moved on at will
    async with connect(ws_url(live_server), ping_interval=None) as ws:
        await ws.send(hello_for(kit_id, secret, features=["ice_servers"]))
        first = (await frames_until(ws, "ice_servers"))[-1]
        kit = live_server.server.fleet.kits[kit_id]
        assert kit.ice is not None and kit.ice.credential is not None
        # Half a second before renewal is due: the link's task, woken, keeps the set and
        # waits its 1 s minimum, then renews it, unasked.
        offset[0] = ice.renew_at(kit.ice.credential) - 0.5 - time.time()
        assert kit.ice_wake is not None
        kit.ice_wake.set()
        started = time.monotonic()
        renewed = (await frames_until(ws, "ice_servers", timeout=5.0))[-1]
        assert time.monotonic() - started >= 0.9
        assert renewed.expires_at > first.expires_at
        check_turn(renewed, kit_id, ice.clock())
    await until(lambda: kit.ice_wake is None, 5, "the link's task ended with the link")
