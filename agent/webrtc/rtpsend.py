"""The lean RTP path from a shared stream to one viewer, installed into aiortc's sender.

aiortc's ``RTCRtpSender._run_rtp`` builds an ``RtpPacket`` object, computes an NTP time and packs
header extensions for every packet, then goes through three coroutine layers to reach the
socket. With 30 pupils that is ~14,000 packets a second on the kit's event loop, and it costs
more than the encoders. :func:`install` replaces, on one sender, exactly the parts that touch
packets; aiortc still does ICE, DTLS, SRTP keys, RTCP reports and feedback:

- payloads come already cut by the encoder thread (``EncodedPacket.payloads``), shared by all;
- the header (with the ``mid`` and ``abs-send-time`` extensions) is serialized once per frame;
  each packet only gets its sequence number and marker patched in, then SRTP; the frame's
  datagrams leave in as few system calls as the kernel allows (``udp.send_batch``);
- the sender-report counters aiortc's RTCP loop reads are updated once per frame, so receivers
  keep lip sync (they align audio and video through sender reports);
- NACKs are answered from a per-viewer history of plain packets (RTX when negotiated), within
  the pupil's retransmission budget (``resend``: once per RTT, ≤ 15 % of their estimate);
- the RTCP aiortc handles for the sender (receiver reports, REMB) also feeds the pupil's
  bandwidth estimate (``feedback``, ``estimate``);
- PLI/FIR go to the shared encoder's rate-limited keyframe request, not to a per-peer encoder;
- the msid stream id is fixed so a page can tell the tracks apart from the SDP alone.

This reaches into aiortc and aioice internals (name-mangled attributes, replaced methods, the
nominated pair), so both are pinned to one minor version in pyproject.toml, every name used is
declared in :mod:`.contract` and checked when the agent starts (it refuses to start if one is
missing or has changed kind), and tests in tests/agent/webrtc exercise every part of it, packet
by packet (test_rtpsend.py) and with real peers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aiortc import RTCRtpCodecParameters, RTCRtpSender
from aiortc import clock as rtc_clock
from aiortc import rtp as aiortc_rtp
from aiortc.mediastreams import MediaStreamError

from ..media.packets import EncodedPacket
from . import udp
from .feedback import PupilFeedback
from .pacer import Pacer
from .tracks import PacketTrack

log = logging.getLogger("agent.webrtc")

MAX_PADDING_PACKETS = 64
PACKET_OVERHEAD = 40
"""The allowance per packet beyond its payload (its headers) when the pacer counts bytes."""
HISTORY = 512
"""Packets kept per viewer for retransmission (≈ 1 s of a 2 Mbit/s stream)."""
_PREFIX = struct.Struct("!BBH")
_PRIVATE = "_RTCRtpSender__"


def install(
    sender: RTCRtpSender,
    track: PacketTrack,
    stream_id: str,
    on_keyframe: Callable[[], None],
    feedback: PupilFeedback | None = None,
    pacer: Pacer | None = None,
) -> LeanRtpLoop:
    """Make ``sender`` send ``track``'s shared packets through :class:`LeanRtpLoop`; with
    ``feedback`` (the pupil's), its RTCP also feeds the pupil's estimate and its NACKs go
    through the pupil's retransmission budget; with ``pacer`` (the pupil's), its packets are
    paced (video waits, sound goes first).

    Every aiortc name used here is declared in :mod:`.contract` and checked at start-up."""
    loop = LeanRtpLoop(sender, track, feedback, pacer)
    sender._run_rtp = loop.run  # type: ignore[method-assign]
    sender._retransmit = loop.retransmit  # type: ignore[method-assign]
    sender._send_keyframe = on_keyframe  # type: ignore[method-assign]
    sender._stream_id = stream_id
    if feedback is not None:
        handler = loop.rtcp_handler(sender._handle_rtcp_packet)
        sender._handle_rtcp_packet = handler  # type: ignore[method-assign,assignment]
    return loop


class LeanRtpLoop:
    """One viewer's RTP loop for one track."""

    def __init__(
        self,
        sender: RTCRtpSender,
        track: PacketTrack,
        feedback: PupilFeedback | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        self._sender = sender
        self._track = track
        self._feedback = feedback
        self._pacer = pacer if track.kind == "video" else None
        self._priority = 0 if track.id == "camera" else 1
        """In the pupil's pacer, the room camera's runs go before the document camera's."""
        self._debit = pacer.debit if pacer is not None else None
        self._timestamp = 0
        self._seq = random.getrandbits(16)
        self._ts_origin = random.getrandbits(32)
        self._history: list[tuple[int, bytes] | None] = [None] * HISTORY
        self._template: tuple[int, bytes, int | None] | None = None
        self.retransmitted = 0

    def _get(self, name: str) -> Any:
        return getattr(self._sender, _PRIVATE + name)

    def _set(self, name: str, value: Any) -> None:
        setattr(self._sender, _PRIVATE + name, value)

    async def run(self, codec: RTCRtpCodecParameters) -> None:
        self._get("rtp_started").set()
        try:
            while True:
                item = await self._track.next_packet()
                await self._send_frame(item, codec.payloadType or 0)
        except (asyncio.CancelledError, ConnectionError, MediaStreamError):
            pass
        except Exception:  # log what we don't expect; the viewer's other tracks go on
            log.exception("RTP loop of %s stopped", self._track.id)
        finally:
            self._track.stop()
            self._get("rtp_exited").set()

    async def _send_frame(self, item: EncodedPacket, payload_type: int) -> None:
        timestamp = (self._ts_origin + item.rtp_timestamp) & 0xFFFFFFFF
        self._timestamp = timestamp
        payloads = item.payloads
        last = len(payloads) - 1
        if self._pacer is None:
            await self._send_run(payloads, 0, last, timestamp, payload_type)
        else:
            sizes = [len(p) + PACKET_OVERHEAD for p in payloads]
            for run in self._pacer.chunks(sizes):
                await self._pacer.acquire(sum(sizes[run]), self._priority)
                await self._send_run(payloads[run], run.start, last, timestamp, payload_type)
        self._set("ntp_timestamp", rtc_clock.current_ntp_time())
        self._set("rtp_timestamp", timestamp)
        self._set("octet_count", self._get("octet_count") + sum(map(len, payloads)))
        self._set("packet_count", self._get("packet_count") + len(payloads))
        self._track.count_sent(item)

    def _pair(self) -> Any:
        dtls = self._sender.transport
        if dtls.state != "connected":
            raise ConnectionError("not connected")
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            raise ConnectionError("no ICE pair")
        return pair

    async def _send_run(
        self, payloads: tuple[bytes, ...], first_index: int, last: int, timestamp: int, pt: int
    ) -> None:
        """Packets ``first_index``… of a frame (``last``: the index of its marked packet),
        stamped with the time they leave."""
        pair = self._pair()
        protect = self._sender.transport._tx_srtp.protect
        first, rest = self._header_rest(timestamp)
        seq = self._seq
        history = self._history
        datagrams: list[bytes] = []
        for i, payload in enumerate(payloads, first_index):
            data = _PREFIX.pack(first, pt | (0x80 if i == last else 0), seq)
            data += rest + payload
            history[seq % HISTORY] = (seq, data)
            datagrams.append(protect(data))
            seq = (seq + 1) & 0xFFFF
        self._seq = seq
        if self._debit is not None and self._pacer is None:
            self._debit(sum(map(len, datagrams)))  # sound: first, and the video waits for it
        await self._send_datagrams(pair, datagrams)

    async def _send_datagrams(self, pair: Any, datagrams: list[bytes]) -> None:
        if not udp.send_batch(pair.protocol, datagrams, pair.remote_addr):
            for datagram in datagrams:  # TURN relay, or no batching: the generic path
                await pair.protocol.send_data(datagram, pair.remote_addr)

    async def send_padding(self, size: int) -> int:
        """Probe the pupil's path with about ``size`` bytes: recent packets sent again as RTX
        (RFC 4588), as libwebrtc pads. A receiver counts them for its estimate and drops them
        as duplicates. Packets of ~1,100 bytes rather than padding-only ones (RTP allows 255
        bytes of padding): four times fewer packets for the kit to encrypt and send. Returns
        the bytes sent: 0 without RTX, or before the first frame."""
        rtx_pt = self._get("rtx_payload_type")
        if rtx_pt is None or self._template is None or size <= 0:
            return 0
        try:
            pair = self._pair()
        except ConnectionError:
            return 0
        header_len = 4 + len(self._template[1])
        abs_offset = self._template[2]
        abs_time = ((rtc_clock.current_ntp_time() >> 14) & 0xFFFFFF).to_bytes(3, "big")
        rtx_ssrc = self._sender._rtx_ssrc.to_bytes(4, "big")
        protect = self._sender.transport._tx_srtp.protect
        rtx_seq = self._get("rtx_sequence_number")
        datagrams: list[bytes] = []
        sent = 0
        for back in range(1, HISTORY):
            entry = self._history[(self._seq - back) % HISTORY]
            if entry is None or sent >= size or len(datagrams) >= MAX_PADDING_PACKETS:
                break
            data = entry[1]
            packet = bytearray(data[0:1])
            packet.append(rtx_pt | (data[1] & 0x80))
            packet += rtx_seq.to_bytes(2, "big") + data[4:8] + rtx_ssrc
            packet += data[12:header_len] + data[2:4] + data[header_len:]
            if abs_offset is not None:
                packet[4 + abs_offset : 7 + abs_offset] = abs_time
            datagrams.append(protect(bytes(packet)))
            sent += len(packet)
            rtx_seq = (rtx_seq + 1) & 0xFFFF
        if not datagrams:
            return 0
        self._set("rtx_sequence_number", rtx_seq)
        await self._send_datagrams(pair, datagrams)
        return sent

    def _header_rest(self, timestamp: int) -> tuple[int, bytes]:
        """First byte and bytes 4.. of this frame's RTP header (timestamp, SSRC, extensions).

        aiortc serializes a template once per sender; each frame only patches the timestamp and
        the 24-bit abs-send-time in place (its offset found by serializing two values).
        """
        if self._template is None:
            self._template = self._make_template()
        first, rest, abs_offset = self._template
        header = bytearray(rest)
        header[0:4] = timestamp.to_bytes(4, "big")
        if abs_offset is not None:
            abs_time = (rtc_clock.current_ntp_time() >> 14) & 0xFFFFFF
            header[abs_offset : abs_offset + 3] = abs_time.to_bytes(3, "big")
        return first, bytes(header)

    def _make_template(self) -> tuple[int, bytes, int | None]:
        ext_map = self._get("rtp_header_extensions_map")

        def serialize(abs_time: int) -> bytes:
            template = aiortc_rtp.RtpPacket(payload_type=0, sequence_number=0, timestamp=0)
            template.ssrc = self._sender._ssrc
            template.extensions.mid = self._get("mid")
            template.extensions.abs_send_time = abs_time
            return bytes(template.serialize(ext_map))[4:]

        zero, ones = serialize(0), serialize(0xFFFFFF)
        differ = [i for i, (a, b) in enumerate(zip(zero, ones, strict=True)) if a != b]
        abs_offset = differ[0] if len(differ) == 3 and differ[2] - differ[0] == 2 else None
        first = aiortc_rtp.RtpPacket(payload_type=0, sequence_number=0, timestamp=0)
        first.extensions.mid = self._get("mid")
        return bytes(first.serialize(ext_map))[0], zero, abs_offset

    def rtcp_handler(
        self, handle: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Coroutine[Any, Any, None]]:
        """aiortc's RTCP handling of this sender (``handle``: reports, RTT, NACK → our
        :meth:`retransmit`, PLI/FIR), then the pupil's feedback fed with the same packet."""
        feedback = self._feedback
        assert feedback is not None
        sender, track = self._sender, self._track

        async def handle_rtcp(packet: Any) -> None:
            await handle(packet)
            ssrc = sender._ssrc
            try:
                size = track.bytes_sent / track.rtp_packets if track.rtp_packets else 0.0
                feedback.on_rtcp(ssrc, packet, self._get("rtt"), size)
            except Exception:  # never into aiortc's DTLS loop: that would end the pupil's media
                log.exception("RTCP feedback of %s not used", track.id)
            track.reported_lost = feedback.lost.get(ssrc, 0)

        return handle_rtcp

    async def retransmit(self, sequence_number: int) -> None:
        """Answer a NACK from the history (RTX when negotiated), within the pupil's budget
        (``resend``); unknown numbers are ignored."""
        entry = self._history[sequence_number % HISTORY]
        if entry is None or entry[0] != sequence_number:
            return
        data = entry[1]
        feedback = self._feedback
        if feedback is not None and not feedback.admit_resend(
            self._sender._ssrc, sequence_number, len(data)
        ):
            self._track.nacks_ignored += 1
            return
        rtx_pt = self._get("rtx_payload_type")
        if rtx_pt is not None:
            ext_map = self._get("rtp_header_extensions_map")
            rtx_seq = self._get("rtx_sequence_number")
            packet = aiortc_rtp.wrap_rtx(
                aiortc_rtp.RtpPacket.parse(data, ext_map), rtx_pt, rtx_seq, self._sender._rtx_ssrc
            )
            self._set("rtx_sequence_number", (rtx_seq + 1) & 0xFFFF)
            data = packet.serialize(ext_map)
        self.retransmitted += 1
        self._track.retransmitted += 1
        if self._debit is not None:
            self._debit(len(data))
        await self._sender.transport._send_rtp(data)
