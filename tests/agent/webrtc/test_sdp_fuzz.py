"""Fuzzing WHEP offers: agent/webrtc/sdp.py ``parse_offer`` (bytes in, verdict out), then the
whole path (HTTP, parse, aiortc's negotiation, the viewer) of a live class on loopback.

Inputs are real offers (Chromium's; aiortc 1.16's with a data channel; both stored) mutated
line by line (lines dropped, repeated up to 1,000 times, swapped, fields replaced by huge
numbers or odd text, candidates added) and byte by byte. Every input must end in an
:class:`~agent.webrtc.sdp.Offer` or a documented refusal (400/413), fast and small; through
HTTP, in a 201 or a 4xx, never a 500.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import aioice.mdns
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from agent.http.app import make_app
from agent.session import ClassSession
from agent.webrtc.ice import restrict_host_addresses
from agent.webrtc.sdp import MAX_MDNS_NAMES, MAX_REMOTE_CANDIDATES, Offer, parse_offer
from tests.conftest import LOOPBACK, agent_config, chrome_offer_on_loopback, stored_sdp
from tests.fuzz import NASTY_TOKENS, ODD_TEXT, bounded, examples, mutated

SEEDS = [
    stored_sdp("chrome-offer.sdp").encode(),
    chrome_offer_on_loopback(),
    stored_sdp("aiortc-offer-datachannel.sdp").encode(),  # candidates on 127.0.0.1
]
CANDIDATE = (
    "a=candidate:{f} {c} {t} {p} {a} {port} typ {typ}",
    {
        "f": st.sampled_from(["1", "x" * 300, ""]) | ODD_TEXT.filter(lambda s: " " not in s),
        "c": st.sampled_from(["1", "2", "0", "257", "99999999999999999999"]),
        "t": st.sampled_from(["udp", "UDP", "tcp", "sctp", "ü"]),
        "p": st.sampled_from(["1", "0", "4294967295", "4294967296", "-1", "1e9", "9" * 100]),
        "a": st.sampled_from(
            ["127.0.0.1", "::1", "x.local", "LOCAL", "a" * 300 + ".local", "256.1.1.1", "::", ""]
        ),
        "port": st.sampled_from(["1", "0", "65535", "65536", "-5", "9" * 40]),
        "typ": st.sampled_from(["host", "srflx", "relay", "prflx", "bogus"]),
    },
)


@st.composite
def _candidate(draw: Callable[..., Any]) -> str:
    template, parts = CANDIDATE
    return template.format(**{k: draw(v) for k, v in parts.items()})


def _field_replaced(line: str, draw: Callable[..., Any]) -> str:
    fields = re.split(r"([ :=/])", line)
    at = draw(st.integers(0, len(fields) - 1))
    nasty = st.sampled_from([t.decode("utf-8", "replace") for t in NASTY_TOKENS])
    fields[at] = draw(nasty | ODD_TEXT.filter(lambda s: "\n" not in s and "\r" not in s))
    return "".join(fields)


@st.composite
def sdp_variants(draw: Callable[..., Any], max_steps: int = 4) -> bytes:
    """A seed offer mutated line by line, 1 to ``max_steps`` times."""
    lines = draw(st.sampled_from(SEEDS)).decode().split("\r\n")
    for _ in range(draw(st.integers(1, max_steps))):
        action = draw(st.sampled_from(["drop", "repeat", "swap", "field", "candidate"]))
        at = draw(st.integers(0, len(lines) - 1))
        if action == "drop":
            del lines[at]
        elif action == "repeat":
            lines[at:at] = [lines[at]] * draw(st.sampled_from([1, 2, 30, 1000]))
        elif action == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif action == "field":
            lines[at] = _field_replaced(lines[at], draw)
        else:
            lines[at:at] = draw(st.lists(_candidate(), min_size=1, max_size=40))
        if not lines:
            lines = ["v=0"]
    newline = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    return newline.join(lines).encode("utf-8", "surrogatepass")


OFFERS = st.one_of(sdp_variants(), sdp_variants(), mutated(SEEDS), st.binary(max_size=500))


def check_offer(body: bytes) -> Offer | None:
    with bounded(seconds=1.0, megabytes=64):
        try:
            offer = parse_offer(body)
        except PayloadTooLarge:
            assert len(body) > 64 * 1024
            return None
        except (BadRequest, UnsupportedMediaType) as exc:  # 415: no codec the kit sends
            assert exc.status in (400, 415) and 0 < len(exc.public_message) <= 200
            assert "\n" not in exc.public_message and "\r" not in exc.public_message
            return None
    assert offer.sdp.endswith("\r\n") and "\r\na=candidate:" not in offer.sdp
    assert len(offer.kinds) == offer.sdp.count("\r\nm=")
    assert len(offer.candidates) <= MAX_REMOTE_CANDIDATES
    names = {value.split()[4].lower() for _, value in offer.mdns_candidates}
    assert len(names) <= MAX_MDNS_NAMES
    return offer


@given(OFFERS)
def test_parse_offer(body: bytes) -> None:
    check_offer(body)


@given(st.sampled_from(SEEDS), st.data())
def test_parse_offer_truncated(seed: bytes, data: st.DataObject) -> None:
    check_offer(seed[: data.draw(st.integers(0, len(seed)))])


def test_parse_offer_at_the_size_limit() -> None:
    for seed in SEEDS:
        for extra in (-1, 0, 1):
            pad = 64 * 1024 - len(seed) - len(b"a=x-pad:\r\n") + extra
            check_offer(seed + b"a=x-pad:" + b"9" * pad + b"\r\n")


def test_repeated_payload_types_are_refused_at_once() -> None:
    """Found by the fuzzer: 1,000 copies of one ``a=rtpmap`` and 1,000 of one ``a=rtcp-fb``
    (56 KB, within the size limit) cost aiortc's parser 1.3 s of CPU, quadratic."""
    chrome = stored_sdp("chrome-offer.sdp")
    rtpmap, feedback = "a=rtpmap:96 VP8/90000\r\n", "a=rtcp-fb:96 ccm fir\r\n"
    body = chrome.replace(rtpmap, rtpmap * 1000, 1).replace(feedback, feedback * 1000, 1)
    started = time.process_time()
    with pytest.raises(BadRequest, match="payload types"):
        parse_offer(body.encode())
    assert time.process_time() - started < 0.2
    for bad in ("a=rtpmap:128 VP8/90000", "a=rtpmap:x VP8/90000", "a=rtpmap:96\tVP8/90000"):
        with pytest.raises(BadRequest, match="payload types"):
            parse_offer(chrome.replace(rtpmap, rtpmap + bad + "\r\n", 1).encode())


def test_every_m_line_has_its_own_mid() -> None:
    """Found by the fuzzer: without ``a=mid`` on its first m-line, aiortc's answer failed with
    an AttributeError and the connection could not be closed (a 500; sockets left open)."""
    aiortc = stored_sdp("aiortc-offer-datachannel.sdp")
    with pytest.raises(BadRequest, match="m-line 0: missing a=mid"):
        parse_offer(aiortc.replace("a=mid:0\r\n", "").encode())
    with pytest.raises(BadRequest, match="used twice"):
        parse_offer(aiortc.replace("a=mid:2", "a=mid:0").encode())
    with pytest.raises(BadRequest, match="names an a=mid no m-line has"):
        parse_offer(merged_first_m_line())


def merged_first_m_line() -> bytes:
    """Found by the fuzzer (``make fuzz``): Chromium's offer with its first m-line joined to
    the BUNDLE line, so the group starts with a mid (0) no m-line has: aiortc's answer failed,
    then its ``close()`` too (a 500)."""
    chrome = chrome_offer_on_loopback().decode()
    return chrome.replace(
        "a=group:BUNDLE 0 1 2\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\nm=video",
        "a=group:BUNDLE 0 1 m=video",
    ).encode()


# -- the whole path, over HTTP -----------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_multicast_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Mutated offers may name ``….local`` hosts: resolving them is refused (no multicast on
    the LAN), as in tests/conftest.py, but a try is not a failure here."""

    async def refuse() -> aioice.mdns.MDnsProtocol:
        raise OSError("tests must not use multicast DNS")

    monkeypatch.setattr(aioice.mdns, "create_mdns_protocol", refuse)
    yield


class LiveClass:
    """A live class on loopback in a loop of its own (Hypothesis drives it synchronously)."""

    def __init__(self) -> None:
        restrict_host_addresses([LOOPBACK])
        self.loop = asyncio.Runner()
        self.session = ClassSession(agent_config(), "")
        self.runner = web.AppRunner(make_app(self.session), access_log=None)
        self.loop.run(self._start())

    async def _start(self) -> None:
        await self.runner.setup()
        await web.TCPSite(self.runner, LOOPBACK, 0).start()
        self.session.base_url = f"http://{LOOPBACK}:{self.runner.addresses[0][1]}"
        await self.session.start()
        self.http = aiohttp.ClientSession()

    @property
    def token(self) -> str:
        assert self.session.token is not None
        return self.session.token

    def offer(self, body: bytes) -> int:
        async def go() -> int:
            url = self.session.whep_url
            assert url is not None
            headers = {"Content-Type": "application/sdp"}
            async with self.http.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status == 201:
                    location = self.session.base_url + response.headers["Location"]
                    async with self.http.delete(location) as deleted:
                        assert deleted.status == 200
                return response.status

        return self.loop.run(go())

    def close(self) -> None:
        async def stop() -> None:
            await self.http.close()
            await self.session.stop()
            await self.runner.cleanup()

        self.loop.run(stop())
        self.loop.close()


def test_an_offer_aiortc_cannot_answer_is_a_400_and_leaves_no_socket() -> None:
    """The viewer closes every transport even when aiortc's ``close()`` raises half-way."""
    live = LiveClass()
    try:
        no_mid = stored_sdp("aiortc-offer-datachannel.sdp").replace("a=mid:0\r\n", "")
        assert live.offer(no_mid.encode()) == 400
        assert live.offer(merged_first_m_line()) == 400

        async def half_closed() -> None:
            viewer, _ = await live.session.add_viewer(live.token, SEEDS[2])
            transports = [t.receiver.transport for t in viewer.pc.getTransceivers()]

            async def broken_close() -> None:
                raise AttributeError("'NoneType' object has no attribute 'transport'")

            viewer.pc.close = broken_close  # as aiortc's after a failed negotiation
            await viewer.close()
            assert all(t.transport.state == "closed" for t in transports)
            assert not live.session.viewers

        live.loop.run(half_closed())
    finally:
        live.close()


def test_whep_offers_end_to_end() -> None:
    live = LiveClass()
    try:

        @settings(max_examples=examples(150))
        @given(st.one_of(sdp_variants(max_steps=1), sdp_variants(), mutated(SEEDS[1:], 1)))
        def offers(body: bytes) -> None:
            with bounded(seconds=5.0, megabytes=64):
                status = live.offer(body)
            assert status in (201, 400, 413, 429, 503), (status, body[:300])
            statuses.append(status)

        statuses: list[int] = []
        offers()
        assert not live.session.viewers
        assert statuses.count(201) >= 3 and statuses.count(400) >= 3, statuses  # both reached
    finally:
        live.close()
