"""Offers nobody completes cannot keep real pupils out (issue 13, Medium 3).

Before: viewers still negotiating counted only against ``max_viewers``, for the whole 30 s
connect timeout, and nothing limited one address: 200 POSTs in a burst from one LAN host
filled the class and the next real pupil got "503 class is full" for 30 s.

The burst comes from a LAN host in a network namespace of its own (``tests/netns.py``), so it
is seen from a LAN address (the kit itself, on loopback, is not rate-limited); the real pupil is
an aiortc peer on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

from agent.http.app import make_app
from agent.session import ClassSession
from agent.webrtc.ice import restrict_host_addresses
from tests.conftest import LOOPBACK, AgentFactory, agent_config, stored_sdp, until
from tests.netns import lossy_path

CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )(\S+) (\d+)", re.M)


def dead_offer(address: str) -> str:
    """A real Chromium offer whose candidates point at ``address``'s discard port: it is
    answered, then never connects (what a burst of junk offers looks like)."""
    return CANDIDATE.sub(
        lambda m: f"{m.group(1)}{address} 9", stored_sdp("chromium-max-bundle-offer.sdp")
    )


async def real_pupil(whep: str, http: aiohttp.ClientSession) -> tuple[RTCPeerConnection, int]:
    """An aiortc pupil; returns it and the status of its POST (connected if 201)."""
    pupil = RTCPeerConnection()
    for kind in ("video", "video", "audio"):
        pupil.addTransceiver(kind, direction="recvonly")
    await pupil.setLocalDescription(await pupil.createOffer())
    async with http.post(
        whep, data=pupil.localDescription.sdp, headers={"Content-Type": "application/sdp"}
    ) as reply:
        if reply.status == 201:
            await pupil.setRemoteDescription(RTCSessionDescription(await reply.text(), "answer"))
        return pupil, reply.status


async def post(http: aiohttp.ClientSession, whep: str, body: str) -> tuple[int, dict[str, str]]:
    async with http.post(whep, data=body, headers={"Content-Type": "application/sdp"}) as r:
        await r.read()
        return r.status, dict(r.headers)


async def test_half_open_viewers_have_their_own_cap(make_agent: AgentFactory) -> None:
    """From the kit itself (no per-address limits): 10 half-open at most; the next joins wait
    up to 3 s for a slot, then get 503 + Retry-After; slots free when viewers connect or time
    out, and a real pupil then joins."""
    agent = await make_agent(webrtc={"connect_timeout_s": 8.0})
    whep = await agent.start()
    junk = dead_offer("127.0.0.1")
    started = time.monotonic()
    results = await asyncio.gather(*(post(agent.http, whep, junk) for _ in range(14)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] * 10 + [503] * 4, statuses
    assert 2.5 < time.monotonic() - started < 4.0  # the 4 waited their 3 s
    refused = [headers for status, headers in results if status == 503]
    assert all(h["Retry-After"] == "2" for h in refused)
    assert "X-Class-State" not in refused[0]  # not "full": the page retries within seconds
    pupil, status = await real_pupil(whep, agent.http)  # slots still held by the junk
    await pupil.close()
    assert status == 503
    await until(lambda: not agent.session.viewers, 4, "the junk dropped at its 8 s timeout")
    pupil, status = await real_pupil(whep, agent.http)
    try:
        assert status == 201
        await until(lambda: pupil.connectionState == "connected", 10, "the real pupil")
    finally:
        await pupil.close()


async def test_a_join_waits_for_a_slot_rather_than_being_refused(
    make_agent: AgentFactory,
) -> None:
    """Pupils scanning the QR code together join in turns: 2 slots, 6 real pupils, all in."""
    agent = await make_agent(webrtc={"max_connecting": 2})
    whep = await agent.start()
    joined = await asyncio.gather(*(real_pupil(whep, agent.http) for _ in range(6)))
    try:
        assert [status for _, status in joined] == [201] * 6
        await until(lambda: all(p.connectionState == "connected" for p, _ in joined), 15, "all six")
    finally:
        await asyncio.gather(*(p.close() for p, _ in joined))


BURST_SCRIPT = """
import asyncio, collections, json, sys
import aiohttp

async def main(url, body, count):
    async with aiohttp.ClientSession() as http:
        async def one():
            async with http.post(url, data=body, headers={"Content-Type": "application/sdp"}) as r:
                await r.read()
                return r.status, r.headers.get("Retry-After")
        results = await asyncio.gather(*(one() for _ in range(count)))
    print(json.dumps(results))

asyncio.run(main(sys.argv[1], sys.stdin.read(), int(sys.argv[2])))
"""


@contextlib.asynccontextmanager
async def kit_on(addresses: list[str]) -> AsyncIterator[tuple[ClassSession, int]]:
    """The agent's HTTP server on ``addresses`` (one port), ICE on them too."""
    restrict_host_addresses(addresses)
    config = agent_config(webrtc={"host_addresses": [LOOPBACK]})
    session = ClassSession(config, "")
    runner = web.AppRunner(make_app(session), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, addresses[0], 0)
        await site.start()
        port = runner.addresses[0][1]
        for address in addresses[1:]:
            await web.TCPSite(runner, address, port).start()
        session.base_url = f"http://{addresses[0]}:{port}"
        yield session, port
    finally:
        await session.stop()
        await runner.cleanup()
        restrict_host_addresses([LOOPBACK])


async def test_a_burst_of_200_from_one_lan_host_keeps_no_pupil_out() -> None:
    with lossy_path(0.0) as path:
        async with kit_on([LOOPBACK, path.kit_address]) as (session, port):
            await session.start()
            assert session.token is not None
            burst_url = f"http://{path.kit_address}:{port}/whep/{session.token}"
            burst = await asyncio.create_subprocess_exec(
                *path.command(sys.executable, "-c", BURST_SCRIPT, burst_url, "200"),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            out, _ = await burst.communicate(dead_offer(path.pupil_address).encode())
            results: list[Any] = json.loads(out)
            statuses = [status for status, _ in results]
            assert statuses.count(201) == 3, statuses  # max_connecting_per_address
            assert statuses.count(429) == 197
            assert all(int(after) >= 1 for status, after in results if status == 429)
            junk = [v for v in session.viewers.values() if v.peer == path.pupil_address]
            assert len(junk) == 3
            async with aiohttp.ClientSession() as http:
                assert session.whep_url is not None
                started = time.monotonic()
                pupil, status = await real_pupil(session.whep_url, http)
                try:
                    assert status == 201
                    await until(lambda: pupil.connectionState == "connected", 10, "pupil")
                    assert time.monotonic() - started < 3.0
                finally:
                    await pupil.close()
            # The host's next attempt is refused by its bucket, with when to come back.
            again = await asyncio.create_subprocess_exec(
                *path.command(sys.executable, "-c", BURST_SCRIPT, burst_url, "1"),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            out, _ = await again.communicate(dead_offer(path.pupil_address).encode())
            [[status, after]] = json.loads(out)
            assert status == 429 and int(after) >= 1
