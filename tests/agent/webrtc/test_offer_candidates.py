"""Every candidate of a pupil's offer reaches the kit's ICE transport, once, and no more than
the caps (issues 12 and 13).

The offers in ``data/`` are real, captured in the topology of ``natpath.py`` (pupil
``10.N.4.2`` behind a home NAT at ``10.N.3.2``, STUN on the "internet") with the pupil page's
transceivers (video, video, audio recvonly, a data channel) and ``bundlePolicy: "max-bundle"``:

- ``chromium-max-bundle-offer.sdp``: Debian's Chromium 156 headless, addresses shown (the
  tests' flags); ``chromium-max-bundle-mdns-offer.sdp``: the same hiding its host address
  behind an mDNS name, as Chromium does by default. Candidates under the first m-line only.
- ``firefox-ip-offer.sdp``: Debian's firefox-esr 153 headless with
  ``media.peerconnection.ice.obfuscate_host_addresses`` off; ``firefox-mdns-offer.sdp``: its
  default. Candidates (RTP and RTCP components, UDP and TCP) and ``a=end-of-candidates`` under
  the first m-line; the others are ``a=bundle-only`` with port 0.

aiortc (the kit) used to keep, per transport, the candidates of the last m-line on it: zero
for these offers, so the kit could only connect to a pupil whose checks reached it directly.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aioice.ice
import aioice.mdns
import pytest
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)

from agent.webrtc.sdp import MAX_MDNS_NAMES, MAX_REMOTE_CANDIDATES
from tests.conftest import LiveAgent, stored_sdp, until


async def post(agent: LiveAgent, offer: str) -> tuple[int, str]:
    whep = agent.session.whep_url or await agent.start()
    async with (
        asyncio.timeout(5),
        agent.http.post(whep, data=offer, headers={"Content-Type": "application/sdp"}) as reply,
    ):
        return reply.status, await reply.text()


def kit_ice(agent: LiveAgent) -> Any:
    """The aioice connection of the (only) viewer: every m-line is bundled on it."""
    [viewer] = agent.session.viewers.values()
    transports = {t.receiver.transport.transport for t in viewer.pc.getTransceivers()}
    assert len(transports) == 1
    return transports.pop()._connection


def offered(offer: str, udp_only: bool = True) -> set[tuple[int, str, int, str]]:
    """(component, address, port, type) of the offer's candidates."""
    out = set()
    for line in offer.split("\r\n"):
        if line.startswith("a=candidate:"):
            f = line.split()
            if not udp_only or f[2].lower() == "udp":
                out.add((int(f[1]), f[4], int(f[5]), f[7]))
    return out


def remote(connection: Any) -> set[tuple[int, str, int, str]]:
    return {(c.component, c.host, c.port, c.type) for c in connection.remote_candidates}


@pytest.mark.parametrize("name", ["chromium-max-bundle-offer.sdp", "firefox-ip-offer.sdp"])
async def test_browser_offer_candidates_reach_the_kit(agent: LiveAgent, name: str) -> None:
    offer = stored_sdp(name)
    assert offer.count("a=candidate:") == sum(
        line.startswith("a=candidate:") for line in offer.split("a=mid:1")[0].split("\r\n")
    ), "a max-bundle offer: candidates under the first m-line only"
    status, answer = await post(agent, offer)
    assert status == 201, answer
    connection = kit_ice(agent)
    expected = offered(offer)
    assert {t for _, _, _, t in expected} == {"host", "srflx"}
    assert remote(connection) == expected
    # No end-of-candidates: the kit keeps listening for the pupil's own checks.
    assert not connection._remote_candidates_end


class SilentResolver:
    """aioice's mDNS protocol, answering nothing (as for a pupil at home), without multicast."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(self, hostname: str, timeout: float | None = 1.0) -> str | None:
        self.asked.append(hostname)
        await asyncio.sleep(0.05)
        return None

    async def close(self) -> None:
        pass


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> SilentResolver:
    fake = SilentResolver()

    async def create() -> SilentResolver:
        return fake

    monkeypatch.setattr(aioice.mdns, "create_mdns_protocol", create)
    monkeypatch.setattr(aioice.ice, "_mdns", type(aioice.ice._mdns)())  # no cached protocol
    return fake


@pytest.mark.parametrize("name", ["chromium-max-bundle-mdns-offer.sdp", "firefox-mdns-offer.sdp"])
async def test_hidden_host_address_and_server_reflexive_one(
    agent: LiveAgent, resolver: SilentResolver, name: str
) -> None:
    """As a pupil at home offers by default: the name is tried in the background, the
    server-reflexive address (the one that works through NATs) is there at once."""
    offer = stored_sdp(name)
    status, answer = await post(agent, offer)
    assert status == 201, answer
    connection = kit_ice(agent)
    srflx = {c for c in offered(offer) if c[3] == "srflx"}
    assert srflx and remote(connection) == srflx
    names = {c[1] for c in offered(offer) if c[3] == "host"}
    assert len(names) == 1 and names.pop().endswith(".local")
    await until(lambda: bool(resolver.asked), 2, "the name tried")
    await asyncio.sleep(0.2)
    assert set(resolver.asked) == {c[1] for c in offered(offer) if c[3] == "host"}


@pytest.mark.parametrize("policy", [RTCBundlePolicy.MAX_BUNDLE, RTCBundlePolicy.BALANCED])
async def test_aiortc_offer_repeating_candidates_adds_each_once(
    agent: LiveAgent, policy: RTCBundlePolicy
) -> None:
    """aiortc lists its candidates under every m-line (max-bundle: the same ones in each):
    each is added once, and the pupil connects."""
    pupil = RTCPeerConnection(RTCConfiguration(bundlePolicy=policy))
    try:
        for kind in ("video", "video", "audio"):
            pupil.addTransceiver(kind, direction="recvonly")
        pupil.createDataChannel("classroom")
        await pupil.setLocalDescription(await pupil.createOffer())
        offer = pupil.localDescription.sdp
        lines = [line for line in offer.split("\r\n") if line.startswith("a=candidate:")]
        if policy == RTCBundlePolicy.MAX_BUNDLE:
            assert len(lines) == 4 * len(offered(offer))  # the same in each of the 4 m-lines
        status, answer = await post(agent, offer)
        assert status == 201, answer
        connection = kit_ice(agent)
        assert len(connection.remote_candidates) == len(offered(offer))
        assert remote(connection) == offered(offer)
        await pupil.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await until(lambda: pupil.connectionState == "connected", 10, "pupil connected")
    finally:
        await pupil.close()


# -- caps (issue 13, Medium 4) -------------------------------------------------------------------


def single_video_offer(candidates: list[str]) -> str:
    """A one-m-line offer (no BUNDLE: the kit's aiortc used to add all its candidates) with
    ``candidates``, on loopback addresses so that no check leaves this machine."""
    lines = [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:abcd",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        f"a=fingerprint:sha-256 {':'.join(['AB'] * 32)}",
        "a=setup:actpass",
        "a=mid:0",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:96 VP8/90000",
        *candidates,
    ]
    return "\r\n".join(lines) + "\r\n"


async def test_a_thousand_host_candidates_are_capped(agent: LiveAgent) -> None:
    candidates = [
        f"a=candidate:{i} 1 udp 2130706431 127.3.{i // 250}.{i % 250 + 1} 9 typ host"
        for i in range(1000)
    ]
    offer = single_video_offer(candidates)
    assert len(offer) < 64 * 1024
    status, answer = await post(agent, offer)
    assert status == 201, answer
    connection = kit_ice(agent)
    assert len(connection.remote_candidates) == MAX_REMOTE_CANDIDATES
    # At most one pair per remote candidate (the kit has one local address in tests), checked
    # at aioice's pace: one new check every 20 ms.
    await asyncio.sleep(0.3)
    assert len(connection._check_list) <= MAX_REMOTE_CANDIDATES


async def test_a_thousand_mdns_names_are_capped(agent: LiveAgent, resolver: SilentResolver) -> None:
    candidates = [f"a=candidate:{i} 1 udp 2130706431 n{i}.local 9 typ host" for i in range(1000)]
    offer = single_video_offer(candidates)
    assert len(offer) < 64 * 1024
    status, answer = await post(agent, offer)
    assert status == 201, answer
    await until(lambda: len(resolver.asked) >= MAX_MDNS_NAMES, 2, "names tried")
    await asyncio.sleep(0.3)
    assert sorted(resolver.asked) == sorted(f"n{i}.local" for i in range(MAX_MDNS_NAMES))


async def test_malformed_candidate_is_refused_cleanly(agent: LiveAgent) -> None:
    for bad in (
        "a=candidate:1 1 udp 2130706431 127.0.0.1 99999 typ host",
        "a=candidate:1 1 udp",
        "a=candidate:1 x udp 1 127.0.0.1 9 typ host",
        "a=candidate:1 1 udp 1 127.0.0.1 ٩ typ host",
    ):
        status, text = await post(agent, single_video_offer([bad]))
        assert status == 400 and "a=candidate" in text, (bad, text)
    assert not agent.session.viewers
