"""agent/webrtc/rtpsend.py packet by packet: a real aiortc ``RTCRtpSender`` on real (unconnected)
DTLS and ICE transports, made "connected" with a real SRTP session and a nominated pair whose
protocol captures the datagrams (or aioice's own protocol on a loopback socket, for the GSO
path); every datagram is decrypted and parsed back (RFC 3550 header, RFC 8285 extensions,
RFC 4588 RTX)."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import av
import pytest
from aioice.candidate import Candidate
from aioice.ice import CandidatePair, Connection, StunProtocol
from aiortc import (
    RTCCertificate,
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceTransport,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
    RTCRtpSender,
    clock,
)
from aiortc.rtcdtlstransport import State
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_RTPFB_NACK,
    HeaderExtensionsMap,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtpPacket,
    pack_remb_fci,
    unwrap_rtx,
)
from pylibsrtp import Policy, Session

from agent.media.fanout import QueueClosed
from agent.media.packets import EncodedPacket
from agent.webrtc import estimate, resend, rtpsend
from agent.webrtc.feedback import PupilFeedback
from agent.webrtc.tracks import PacketTrack

KEY = bytes(range(30))  # AES-128 key + 112-bit salt (SRTP_AES128_CM_HMAC_SHA1_80)
PT, RTX_PT = 102, 103
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
REMOTE = ("192.0.2.7", 40000)


@dataclass
class Capture:
    """A nominated pair's protocol that keeps what it is asked to send (udp.py does not batch
    for it: not aioice's ``StunProtocol``, like a TURN pair)."""

    sent: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)

    async def send_data(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


@dataclass
class Pair:
    protocol: Any
    remote_addr: tuple[str, int] = REMOTE


@dataclass
class Kit:
    sender: RTCRtpSender
    loop: rtpsend.LeanRtpLoop
    track: PacketTrack
    dtls: RTCDtlsTransport
    capture: Capture
    rtcp: list[bytes]
    keyframes: list[int]
    ext_map: HeaderExtensionsMap
    feedback: PupilFeedback
    clock: list[float]

    def private(self, name: str) -> Any:
        return getattr(self.sender, f"_RTCRtpSender__{name}")

    def set_private(self, name: str, value: Any) -> None:
        setattr(self.sender, f"_RTCRtpSender__{name}", value)

    def nominate(self, pair: Any) -> None:
        self.dtls.transport._connection._nominated[1] = pair


@pytest.fixture
async def kit() -> AsyncIterator[Kit]:
    ice = RTCIceTransport(RTCIceGatherer(iceServers=[]))
    dtls = RTCDtlsTransport(ice, [RTCCertificate.generateCertificate()])
    track = PacketTrack("video", "camera")
    sender = RTCRtpSender(track, dtls)
    keyframes: list[int] = []
    now = [1000.0]
    feedback = PupilFeedback(lambda: track.bytes_sent, clock=lambda: now[0])
    rtpsend.install(sender, track, "classroom", lambda: keyframes.append(1), feedback)
    loop = sender._run_rtp.__self__  # type: ignore[attr-defined]
    assert isinstance(loop, rtpsend.LeanRtpLoop)
    dtls._state = State.CONNECTED
    dtls._tx_srtp = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    rtcp: list[bytes] = []

    async def send_rtp(data: bytes) -> None:
        rtcp.append(data)

    dtls._send_rtp = send_rtp  # type: ignore[method-assign]
    ext_map = sender._RTCRtpSender__rtp_header_extensions_map
    ext_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=1, uri=MID_URI),
                RTCRtpHeaderExtensionParameters(id=3, uri=ABS_SEND_TIME_URI),
            ]
        )
    )
    sender._RTCRtpSender__mid = "1"
    capture = Capture()
    made = Kit(sender, loop, track, dtls, capture, rtcp, keyframes, ext_map, feedback, now)
    made.nominate(Pair(capture))
    yield made
    track.stop()


def encoded(payloads: list[bytes], rtp_timestamp: int) -> EncodedPacket:
    packet = av.Packet(b"".join(payloads))
    packet.time_base = Fraction(1, 90_000)
    return EncodedPacket(
        packet, False, 0.0, sum(map(len, payloads)), tuple(payloads), rtp_timestamp
    )


def decrypt(datagrams: list[bytes], ext_map: HeaderExtensionsMap) -> list[RtpPacket]:
    session = Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND))
    return [RtpPacket.parse(session.unprotect(d), ext_map) for d in datagrams]


FRAMES = [
    [b"a" * 1200, b"b" * 1200, b"c" * 300],
    [b"d" * 900, b"e" * 10],
    [b"f" * 50],
]


async def send_frames(kit: Kit, frames: list[list[bytes]] = FRAMES) -> None:
    for index, payloads in enumerate(frames):
        await kit.loop._send_frame(encoded(payloads, index * 3000), PT)


async def test_headers_sequence_numbers_marker_timestamps_ssrc_extensions(kit: Kit) -> None:
    kit.loop._seq = 65534  # the sequence number wraps inside the first frame
    kit.loop._ts_origin = 0xFFFFF000  # and the timestamp between the second and third
    before = clock.current_ntp_time()
    await send_frames(kit)
    after = clock.current_ntp_time()
    assert {addr for _, addr in kit.capture.sent} == {REMOTE}
    packets = decrypt([data for data, _ in kit.capture.sent], kit.ext_map)
    assert [p.sequence_number for p in packets] == [65534, 65535, 0, 1, 2, 3]
    assert [p.marker for p in packets] == [0, 0, 1, 0, 1, 1]  # the last packet of each frame
    assert [p.timestamp for p in packets] == [0xFFFFF000] * 3 + [0xFFFFFBB8] * 2 + [0x770]
    assert {p.ssrc for p in packets} == {kit.sender._ssrc}
    assert {(p.version, p.payload_type, p.padding_size) for p in packets} == {(2, PT, 0)}
    assert [p.payload for p in packets] == [b for frame in FRAMES for b in frame]
    assert {p.extensions.mid for p in packets} == {"1"}
    for p in packets:  # abs-send-time: 6.18 fixed point seconds, 24 bits (mod 64 s)
        sent = p.extensions.abs_send_time
        assert sent is not None
        low, high = (before >> 14) & 0xFFFFFF, (after >> 14) & 0xFFFFFF
        assert low <= sent <= high or high < low  # (unless the 64 s counter wrapped)


async def test_sender_reports_counters_follow_the_frames(kit: Kit) -> None:
    """aiortc's RTCP loop builds sender reports from these (lip sync at the receiver)."""
    kit.loop._ts_origin = 1000
    await send_frames(kit)
    assert kit.private("packet_count") == 6
    assert kit.private("octet_count") == sum(len(b) for frame in FRAMES for b in frame)
    assert kit.private("rtp_timestamp") == 1000 + 6000
    assert abs((kit.private("ntp_timestamp") >> 32) - (clock.current_ntp_time() >> 32)) <= 1
    total = sum(len(b) for frame in FRAMES for b in frame)
    assert (kit.track.packets_sent, kit.track.bytes_sent) == (3, total)  # frames, bytes


async def test_a_nack_is_answered_from_the_history(kit: Kit) -> None:
    kit.loop._seq = 100
    await send_frames(kit)
    await kit.sender._retransmit(101)
    await kit.sender._retransmit(99)  # never sent: ignored
    [again] = [RtpPacket.parse(d, kit.ext_map) for d in kit.rtcp]  # plain: DTLS encrypts it
    assert (again.sequence_number, again.payload, again.marker) == (101, b"b" * 1200, 0)
    assert again.ssrc == kit.sender._ssrc
    assert kit.loop.retransmitted == kit.track.retransmitted == 1


async def test_a_nack_is_answered_with_rtx_when_negotiated(kit: Kit) -> None:
    kit.set_private("rtx_payload_type", RTX_PT)
    kit.set_private("rtx_sequence_number", 0xFFFF)
    kit.loop._seq = 500
    await send_frames(kit)
    await kit.sender._retransmit(502)
    await kit.sender._retransmit(500)
    rtx = [RtpPacket.parse(d, kit.ext_map) for d in kit.rtcp]
    assert [p.payload_type for p in rtx] == [RTX_PT, RTX_PT]
    assert {p.ssrc for p in rtx} == {kit.sender._rtx_ssrc}
    assert [p.sequence_number for p in rtx] == [0xFFFF, 0]  # its own sequence, wrapping
    assert [p.marker for p in rtx] == [1, 0]
    assert rtx[0].payload == struct.pack("!H", 502) + b"c" * 300  # OSN then the payload
    assert rtx[1].payload == struct.pack("!H", 500) + b"a" * 1200
    assert kit.private("rtx_sequence_number") == 1


async def test_the_history_forgets_after_its_size(kit: Kit) -> None:
    kit.loop._seq = 0
    frames = [[bytes([i % 256]) * 10] for i in range(rtpsend.HISTORY + 1)]
    await send_frames(kit, frames)
    await kit.sender._retransmit(0)  # overwritten by packet HISTORY
    await kit.sender._retransmit(1)
    assert [RtpPacket.parse(d, kit.ext_map).sequence_number for d in kit.rtcp] == [1]


async def test_no_packet_leaves_before_dtls_and_ice_are_ready(kit: Kit) -> None:
    kit.dtls._state = State.CONNECTING
    with pytest.raises(ConnectionError):
        await send_frames(kit)
    kit.dtls._state = State.CONNECTED
    kit.dtls.transport._connection._nominated.clear()
    with pytest.raises(ConnectionError):
        await send_frames(kit)
    assert kit.capture.sent == []


async def test_install_replaces_the_loop_keyframes_and_stream_id(kit: Kit) -> None:
    assert kit.sender._stream_id == "classroom"
    kit.sender._send_keyframe()  # a PLI/FIR from the pupil: the shared encoder is asked
    assert kit.keyframes == [1]


class FakeQueue:
    def __init__(self, items: list[EncodedPacket]) -> None:
        self.items = items

    wakeup: object = None

    def take(self) -> EncodedPacket:
        if not self.items:
            raise QueueClosed
        return self.items.pop(0)

    def __len__(self) -> int:
        return len(self.items)

    def request_keyframe(self) -> None:
        pass

    def stats(self) -> dict[str, object]:
        return {}


async def test_the_loop_runs_until_its_queue_closes(kit: Kit) -> None:
    """``run`` is what aiortc's ``send`` starts: it sends every frame, then tells aiortc it
    started and exited (``stop`` waits for that)."""
    queue = FakeQueue([encoded(frame, i * 3000) for i, frame in enumerate(FRAMES)])
    unsubscribed: list[object] = []
    kit.track.bind("h264", lambda layer, join=False: queue, lambda q, layer: unsubscribed.append(q))  # type: ignore[arg-type, return-value]
    codec = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=PT)
    async with asyncio.timeout(5):
        await kit.sender._run_rtp(codec)
    assert kit.private("rtp_started").is_set() and kit.private("rtp_exited").is_set()
    assert len(decrypt([d for d, _ in kit.capture.sent], kit.ext_map)) == 6
    assert unsubscribed == [queue] and kit.track.readyState == "ended"
    assert kit.track.packets_sent == 3


async def test_frames_take_the_gso_path_on_a_plain_udp_pair(kit: Kit) -> None:
    """With aioice's own protocol on a real socket, a frame goes out batched (udp.py); the
    receiver gets the same packets as through the one-by-one path."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: StunProtocol(Connection(ice_controlling=False)), local_addr=("127.0.0.1", 0)
    )
    try:
        host, port = receiver.getsockname()
        remote = Candidate("1", 1, "udp", 1, host, port, "host")
        kit.nominate(CandidatePair(protocol, remote))
        kit.loop._seq = 7
        await send_frames(kit)
        datagrams = []
        async with asyncio.timeout(5):
            while len(datagrams) < 6:
                datagrams.append(await loop.sock_recv(receiver, 65536))
    finally:
        transport.close()
        receiver.close()
    assert kit.capture.sent == []  # nothing went through send_data
    packets = decrypt(datagrams, kit.ext_map)
    assert [p.sequence_number for p in packets] == [7, 8, 9, 10, 11, 12]
    assert [p.marker for p in packets] == [0, 0, 1, 0, 1, 1]
    assert [p.payload for p in packets] == [b for frame in FRAMES for b in frame]


def report(ssrc: int, fraction_lost: int, highest: int, lost: int) -> RtcpRrPacket:
    info = RtcpReceiverInfo(
        ssrc=ssrc,
        fraction_lost=fraction_lost,
        packets_lost=lost,
        highest_sequence=highest,
        jitter=0,
        lsr=0,
        dlsr=0,
    )
    return RtcpRrPacket(ssrc=0x1234, reports=[info, replace(info, ssrc=ssrc ^ 1)])


async def test_receiver_reports_and_remb_reach_the_pupils_estimate(kit: Kit) -> None:
    """Through aiortc's own RTCP handler (as the DTLS transport calls it): a report block for
    another stream is not ours; a REMB naming our SSRC caps the estimate."""
    ssrc = kit.sender._ssrc
    handle = kit.sender._handle_rtcp_packet
    assert kit.feedback.estimate() == estimate.START_BPS  # nothing heard yet: the safe start
    await handle(report(ssrc, 0, 1000, 0))
    kit.clock[0] += 1.0
    await handle(report(ssrc, 64, 1100, 25))  # 25 % lost
    assert kit.feedback.estimator.loss == pytest.approx(0.25, abs=0.01)
    assert kit.feedback.estimate() < estimate.START_BPS  # backed off
    assert kit.track.stats()["lost"] == 25
    before = kit.feedback.estimate()
    for bitrate in (600_000, 300_000):
        remb = RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(bitrate, [ssrc])
        )
        await handle(remb)
    assert kit.feedback.stats()["remb_kbps"] == 300
    assert kit.feedback.estimator.remb_fell(kit.clock[0])  # it ends a probe, no ceiling
    assert kit.feedback.estimate() == before
    other = RtcpPsfbPacket(
        fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(1, [ssrc + 1])
    )
    await handle(other)  # names another stream only
    assert kit.feedback.stats()["remb_kbps"] == 300


async def test_nacks_within_one_rtt_and_over_the_budget_are_ignored(kit: Kit) -> None:
    """The pupil's budget: a packet is resent at most once per RTT, and resent bytes stay
    within 15 % of the estimate over the window; the rest is counted, not sent."""
    kit.loop._seq = 0
    frames = [[bytes([i]) * 1000] for i in range(80)]
    await send_frames(kit, frames)
    handle = kit.sender._handle_rtcp_packet

    async def nack(*lost: int) -> None:
        packet = RtcpRtpfbPacket(
            fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=kit.sender._ssrc, lost=list(lost)
        )
        await handle(packet)

    await nack(1)
    await nack(1)  # again within the (default 100 ms) RTT: ignored
    kit.clock[0] += 0.2
    await nack(1)  # one RTT later: resent again
    assert kit.track.retransmitted == 2 and kit.track.nacks_ignored == 1
    budget = estimate.START_BPS * resend.FRACTION / 8 * resend.WINDOW_S  # at the safe start
    await nack(*range(2, 80))
    sent = kit.feedback.budget.resent_bytes
    assert budget - 1000 < sent <= budget
    assert kit.track.retransmitted == len(kit.rtcp) == sent // 1000
    assert kit.feedback.budget.ignored_budget == 78 - (kit.track.retransmitted - 2)
    kit.clock[0] += resend.WINDOW_S  # the window has passed: room again
    await nack(79)
    assert kit.track.retransmitted == sent // 1000 + 1
    link = kit.feedback.stats()
    assert link["resent_bytes"] == kit.feedback.budget.resent_bytes
    assert link["nacks_ignored"] == kit.track.nacks_ignored
    assert link["nacks_over_budget"] == kit.feedback.budget.ignored_budget


async def test_a_failure_in_the_feedback_stays_out_of_aiortcs_rtcp_loop(
    kit: Kit, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception there would end the DTLS transport's receive loop: the pupil's media."""

    def broken(*args: Any) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(kit.feedback, "on_rtcp", broken)
    await kit.sender._handle_rtcp_packet(report(kit.sender._ssrc, 0, 1000, 0))
    assert "RTCP feedback of camera not used" in caplog.text


async def test_probe_padding_is_recent_packets_again_as_rtx(kit: Kit) -> None:
    """What ``control`` sends while probing: the newest packets again on the RTX stream, each
    unwrapping to the packet it repeats (a receiver drops it as a duplicate), stamped now."""
    assert await kit.loop.send_padding(3000) == 0  # nothing sent yet, no RTX: nothing to probe
    kit.set_private("rtx_payload_type", RTX_PT)
    kit.set_private("rtx_sequence_number", 7)
    kit.loop._seq = 100
    kit.loop._ts_origin = 0
    await send_frames(kit)
    kit.capture.sent.clear()
    before = clock.current_ntp_time()
    sent = await kit.loop.send_padding(2000)
    after = clock.current_ntp_time()
    padding = decrypt([data for data, _ in kit.capture.sent], kit.ext_map)
    assert [p.payload_type for p in padding] == [RTX_PT] * 5  # until ≥ 2000 bytes
    assert {p.ssrc for p in padding} == {kit.sender._rtx_ssrc}
    assert [p.sequence_number for p in padding] == [7, 8, 9, 10, 11]
    assert kit.private("rtx_sequence_number") == 12
    repeated = [unwrap_rtx(p, PT, kit.sender._ssrc) for p in padding]
    assert [(p.sequence_number, p.payload, p.marker) for p in repeated] == [
        (105, b"f" * 50, 1),
        (104, b"e" * 10, 1),
        (103, b"d" * 900, 0),
        (102, b"c" * 300, 1),
        (101, b"b" * 1200, 0),
    ]
    assert [p.timestamp for p in padding] == [6000, 3000, 3000, 0, 0]
    assert all(p.extensions.mid == "1" for p in padding)
    (stamp,) = {p.extensions.abs_send_time for p in padding}  # when they left, not the frame
    low, high = (before >> 14) & 0xFFFFFF, (after >> 14) & 0xFFFFFF
    assert stamp is not None and (low <= stamp <= high or high < low)
    assert sent == sum(len(p.serialize(kit.ext_map)) for p in padding)
