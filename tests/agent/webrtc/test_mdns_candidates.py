"""A pupil's browser hides its addresses behind mDNS names (``….local`` candidates): Chrome when
the page has no camera permission, Firefox always (with ``a=end-of-candidates``). The kit must
answer at once, not after trying to resolve names it usually cannot resolve (a pupil at home),
and connect by learning the pupil's address from the pupil's own checks.

The pupil is a real aiortc peer whose offer has every candidate renamed as a browser does; the
kit's mDNS resolver is replaced by one the test controls (no multicast leaves this machine)."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import aioice.ice
import aioice.mdns
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.conftest import LiveAgent, until

CANDIDATE_HOST = re.compile(r"^(a=candidate:\S+ \d+ udp \d+ )(\S+)", re.M)


class Resolver:
    """Stands in for aioice's mDNS protocol: answers ``address`` once ``release`` is set."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.release = asyncio.Event()
        self.asked: list[str] = []

    async def resolve(self, hostname: str, timeout: float | None = 1.0) -> str | None:
        self.asked.append(hostname)
        await self.release.wait()
        return self.address

    async def close(self) -> None:
        self.release.set()


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Resolver:
    fake = Resolver(request.param)

    async def create() -> Resolver:
        return fake

    monkeypatch.setattr(aioice.mdns, "create_mdns_protocol", create)
    monkeypatch.setattr(aioice.ice, "_mdns", type(aioice.ice._mdns)())  # no cached protocol
    return fake


async def hidden_pupil(whep: str, agent: LiveAgent) -> tuple[RTCPeerConnection, str]:
    """POST an offer whose candidates are all ``….local`` names, ending with
    ``a=end-of-candidates`` as Firefox's do; returns the pupil and the answer."""
    pupil = RTCPeerConnection()
    for kind in ("video", "video", "audio"):
        pupil.addTransceiver(kind, direction="recvonly")
    await pupil.setLocalDescription(await pupil.createOffer())
    sdp = pupil.localDescription.sdp
    assert "a=end-of-candidates" in sdp
    offer = CANDIDATE_HOST.sub(lambda m: m.group(1) + f"{uuid.uuid4()}.local", sdp)
    async with (
        asyncio.timeout(5),  # held until the names resolve: never, for an unknown name
        agent.http.post(whep, data=offer, headers={"Content-Type": "application/sdp"}) as reply,
    ):
        answer = await reply.text()
        assert reply.status == 201, answer
    await pupil.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return pupil, answer


def kit_connection(agent: LiveAgent) -> Any:
    [viewer] = agent.session.viewers.values()
    return viewer.pc.getTransceivers()[0].receiver.transport.transport._connection


@pytest.mark.parametrize("resolver", [None], indirect=True)
async def test_names_that_never_resolve_neither_delay_nor_stop_the_pupil(
    agent: LiveAgent, resolver: Resolver
) -> None:
    pupil, _ = await hidden_pupil(await agent.start(), agent)
    try:
        await until(lambda: pupil.connectionState == "connected", 10, "pupil connected")
        [viewer] = agent.session.viewers.values()
        assert viewer.state == "connected"
        assert resolver.asked  # the kit did try the names, after answering
        pair = kit_connection(agent)._nominated[1]
        assert pair.remote_candidate.type == "prflx"  # learnt from the pupil's checks
    finally:
        await pupil.close()


@pytest.mark.parametrize("resolver", ["127.0.0.1"], indirect=True)
async def test_names_that_resolve_are_used_once_known(agent: LiveAgent, resolver: Resolver) -> None:
    pupil, _ = await hidden_pupil(await agent.start(), agent)
    try:
        connection = kit_connection(agent)
        assert not connection.remote_candidates  # answered before any name was resolved
        resolver.release.set()
        await until(lambda: bool(connection.remote_candidates), 5, "the resolved candidate")
        assert connection.remote_candidates[0].host.endswith(".local")  # kept as named
        await until(lambda: pupil.connectionState == "connected", 10, "pupil connected")
    finally:
        await pupil.close()
