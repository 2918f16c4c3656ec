"""The pupil page takes its ICE servers from the WHEP endpoint's ``Link: rel="ice-server"``
headers (OPTIONS, before its peer connection exists), in real headless Chromium, and an
unreachable STUN/TURN server does not hold its offer back beyond the page's cap."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.agent.webrtc.coturn import LoopbackTurn
from tests.chromium import BROWSER_MARKS, open_pupil_page, stats_until
from tests.conftest import AgentFactory

pytestmark = BROWSER_MARKS

RECORD_FETCHES = """
window.__fetches = [];
const originalFetch = window.fetch;
window.fetch = (url, options = {}) => {
  window.__fetches.push({method: options.method || "GET", at: performance.now(),
                         body: typeof options.body === "string" ? options.body : null});
  return originalFetch(url, options);
};
"""
CAP_MS = 1000
"""whep.js's gatherTimeoutMs: the longest an offer waits for server candidates."""


async def fetches(page: Any) -> list[dict[str, Any]]:
    return list(await page.evaluate("window.__fetches"))


def connected_and_playing(stats: dict[str, Any]) -> bool:
    frames = [t["frames"] for t in stats["tracks"].values() if t["kind"] == "video"]
    return stats["state"] == "connected" and bool(frames) and frames[0] > 5


async def test_link_header_parser(make_agent: AgentFactory, browser: Any) -> None:
    """RFC 8288 as servers really send it: several headers joined by ", ", commas and escaped
    quotes inside quoted strings, rel lists, parameters in any case, the first of a repeated
    parameter, other links and malformed parts skipped."""
    agent = await make_agent()
    await agent.start()
    page = await open_pupil_page(browser, agent.session.join_url or "")
    header = ", ".join(
        [
            '<turn:t.example.fr:3478?transport=udp>; rel="ice-server"; username="1:a,b";'
            ' credential="p\\"q,r"; credential-type="password"',
            "<https://example.fr/other>; rel=preload",
            "garbage without brackets; rel=ice-server",
            '<stun:s.example.fr:3478>; REL="ice-server somethingelse"; rel="nope"',
            '<turns:t.example.fr:443?transport=tcp>;rel=ice-server;username=u;credential="c"',
            '<http://not-ice.example.fr>; rel="ice-server"',
            "<turn:broken",
        ]
    )
    servers = await page.evaluate("(h) => iceServersFromLinks(h)", header)
    assert servers == [
        {
            "urls": "turn:t.example.fr:3478?transport=udp",
            "username": "1:a,b",
            "credential": 'p"q,r',
        },
        {"urls": "stun:s.example.fr:3478"},
        {"urls": "turns:t.example.fr:443?transport=tcp", "username": "u", "credential": "c"},
    ]
    assert await page.evaluate("() => iceServersFromLinks(null)") == []


async def test_page_uses_the_turn_server_of_the_link_headers(
    make_agent: AgentFactory, browser: Any, coturn: LoopbackTurn
) -> None:
    username, credential = coturn.credentials("pupil")
    turn_url = coturn.urls()["udp"]
    agent = await make_agent(
        webrtc={
            "pupil_ice_servers": [
                {"urls": [turn_url], "username": username, "credential": credential}
            ]
        }
    )
    await agent.start()
    started = time.monotonic()
    page = await open_pupil_page(browser, agent.session.join_url or "", init_script=RECORD_FETCHES)
    await stats_until(page, connected_and_playing)
    joined = time.monotonic() - started
    configuration = await page.evaluate("() => session.pc.getConfiguration().iceServers")
    assert configuration == [{"urls": [turn_url], "username": username, "credential": credential}]
    calls = await fetches(page)
    assert [c["method"] for c in calls[:2]] == ["OPTIONS", "POST"]
    offer = calls[1]["body"]
    assert " typ relay " in offer, "the offer carries no relay candidate"
    # The offer left as soon as the relay candidate was there, not at the cap.
    waited = calls[1]["at"] - calls[0]["at"]
    print(json.dumps({"offer_after_options_ms": round(waited), "join_s": round(joined, 2)}))
    assert waited < CAP_MS * 0.6, waited


@pytest.fixture
def dead_ports() -> Iterator[tuple[int, int]]:
    """A UDP port that drops everything and a TCP port that accepts and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", 0))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        yield udp.getsockname()[1], tcp.getsockname()[1]


async def test_unreachable_servers_cost_at_most_the_cap(
    make_agent: AgentFactory, browser: Any, dead_ports: tuple[int, int]
) -> None:
    udp, tcp = dead_ports
    servers = [
        {"urls": [f"stun:127.0.0.1:{udp}"]},
        {
            "urls": [f"turn:127.0.0.1:{udp}?transport=udp", f"turn:127.0.0.1:{tcp}?transport=tcp"],
            "username": "1900000000:pupil",
            "credential": "c2VjcmV0",
        },
    ]
    agent = await make_agent(webrtc={"pupil_ice_servers": servers})
    await agent.start()
    started = time.monotonic()
    page = await open_pupil_page(browser, agent.session.join_url or "", init_script=RECORD_FETCHES)
    await stats_until(page, connected_and_playing)
    joined = time.monotonic() - started
    configuration = await page.evaluate("() => session.pc.getConfiguration().iceServers")
    assert len(configuration) == 3  # the page did take them (one Link per URL)
    calls = await fetches(page)
    waited = calls[1]["at"] - calls[0]["at"]
    print(json.dumps({"offer_after_options_ms": round(waited), "join_s": round(joined, 2)}))
    assert waited < CAP_MS + 400, waited  # the cap (gathering itself: > 15 s)
    assert joined < 6.0
