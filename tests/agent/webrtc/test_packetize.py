"""RTP payloads cut by agent/webrtc/packetize.py, read back against the RFCs with depacketizers
written here (not aiortc's): H.264 single NAL / STAP-A / FU-A (RFC 6184 §5.6–5.8), the VP8
payload descriptor (RFC 7741 §4.2), Opus as is (RFC 7587 §4.2)."""

from __future__ import annotations

import random
import re
import struct
from fractions import Fraction

import av
import numpy as np
import pytest

from agent.webrtc.packetize import make_packer

MTU_PAYLOAD = 1300
"""The largest payload we send (aiortc's PACKET_MAX): with RTP header, extensions and SRTP tag,
a datagram stays well under a 1500-byte Ethernet MTU."""
VIDEO_RATE = 90_000


def av_packet(data: bytes, pts: int | None, time_base: Fraction) -> av.Packet:
    packet = av.Packet(data)
    packet.pts = pts
    packet.time_base = time_base
    return packet


def body(size: int, seed: int) -> bytes:
    """NAL unit payload without any 00 00 sequence (so no start code inside)."""
    rng = random.Random(seed)
    return bytes(rng.randrange(1, 256) for _ in range(size))


def annex_b(*nals: bytes, long_codes: bool = True) -> bytes:
    code = b"\x00\x00\x00\x01" if long_codes else b"\x00\x00\x01"
    return b"".join(code + nal for nal in nals)


def h264_depacketize(payloads: tuple[bytes, ...]) -> tuple[list[bytes], list[str]]:
    """NAL units and the packetization mode of each payload, per RFC 6184."""
    nals: list[bytes] = []
    modes: list[str] = []
    fragment: bytearray | None = None
    for payload in payloads:
        assert payload[0] & 0x80 == 0, "F bit set"
        kind = payload[0] & 0x1F
        if 1 <= kind <= 23:
            assert fragment is None, "single NAL inside a fragmented one"
            nals.append(payload)
            modes.append("single")
        elif kind == 24:  # STAP-A: [header][size][nal][size][nal]...
            assert fragment is None
            offset, inner = 1, []
            while offset < len(payload):
                (size,) = struct.unpack_from("!H", payload, offset)
                inner.append(payload[offset + 2 : offset + 2 + size])
                offset += 2 + size
            assert offset == len(payload), "STAP-A sizes do not add up"
            assert len(inner) >= 2
            # the STAP-A's NRI is the highest of its NAL units' (§5.7.1)
            assert payload[0] & 0x60 == max(n[0] & 0x60 for n in inner)
            nals.extend(inner)
            modes.append("stap-a")
        elif kind == 28:  # FU-A: [indicator][S E R type][fragment]
            start, end = payload[1] & 0x80, payload[1] & 0x40
            assert payload[1] & 0x20 == 0, "R bit set"
            assert not (start and end), "a FU-A with both S and E is a single NAL"
            if start:
                assert fragment is None
                fragment = bytearray([payload[0] & 0xE0 | payload[1] & 0x1F])
            assert fragment is not None, "FU-A fragment without its start"
            fragment += payload[2:]
            modes.append("fu-a-start" if start else "fu-a-end" if end else "fu-a")
            if end:
                nals.append(bytes(fragment))
                fragment = None
        else:
            raise AssertionError(f"NAL type {kind} in an RTP payload")
    assert fragment is None, "FU-A without its end"
    return nals, modes


def test_h264_small_units_are_aggregated_and_a_large_one_fragmented() -> None:
    sps, pps = b"\x67" + body(20, 1), b"\x68" + body(4, 2)
    idr = b"\x65" + body(5000, 3)
    pack = make_packer("h264")
    payloads, timestamp = pack(av_packet(annex_b(sps, pps, idr), 3000, Fraction(1, 90_000)))
    nals, modes = h264_depacketize(payloads)
    assert nals == [sps, pps, idr]
    assert modes == ["stap-a", "fu-a-start", "fu-a", "fu-a", "fu-a-end"]
    assert timestamp == 3000
    assert all(len(p) <= MTU_PAYLOAD for p in payloads)
    # the fragments are split evenly (at most one byte apart): what lets udp.py send a frame
    # in one GSO call (equal-size datagrams, only the last one may be shorter)
    sizes = [len(p) for p in payloads[1:]]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)


def test_h264_fragment_boundaries_keep_the_nal_header() -> None:
    """FU indicator: F and NRI of the original header, type 28; FU header: its type (§5.8)."""
    nal = bytes([0x41]) + body(MTU_PAYLOAD * 3, 4)  # NRI 2, type 1 (non-IDR slice)
    payloads, _ = make_packer("h264")(av_packet(annex_b(nal), 0, Fraction(1, 90_000)))
    assert len(payloads) == 4
    for payload in payloads:
        assert payload[0] == 0x40 | 28
        assert payload[1] & 0x1F == 1
    assert [p[1] & 0xC0 for p in payloads] == [0x80, 0, 0, 0x40]
    assert b"".join(p[2:] for p in payloads) == nal[1:]


@pytest.mark.parametrize("long_codes", [True, False])
def test_h264_units_that_fit_go_alone_or_aggregated(long_codes: bool) -> None:
    one = bytes([0x61]) + body(MTU_PAYLOAD - 1, 5)  # exactly the limit: a single NAL packet
    two, three = bytes([0x41]) + body(30, 6), bytes([0x01]) + body(30, 7)
    payloads, _ = make_packer("h264")(
        av_packet(annex_b(one, two, three, long_codes=long_codes), 0, Fraction(1, 90_000))
    )
    nals, modes = h264_depacketize(payloads)
    assert nals == [one, two, three]
    assert modes == ["single", "stap-a"]
    assert payloads[1][0] == 0x40 | 24  # STAP-A with the higher NRI of the two


def test_h264_from_a_real_encoder_round_trips() -> None:
    """A libx264 keyframe (SPS, PPS, SEI, IDR slices) comes back NAL for NAL."""
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = 640, 360, "yuv420p"
    codec.time_base = Fraction(1, 30)
    codec.options = {"preset": "ultrafast", "tune": "zerolatency"}
    rng = np.random.default_rng(8)
    image = rng.integers(0, 255, (360, 640, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    frame.pts = 7
    packets = [*codec.encode(frame), *codec.encode(None)]
    packet = packets[0]
    packet.time_base = Fraction(1, 30)
    data = bytes(packet)
    payloads, timestamp = make_packer("h264")(packet)
    nals, _ = h264_depacketize(payloads)
    assert nals == [n for n in re.split(b"\x00\x00\x00\x01|\x00\x00\x01", data) if n]
    assert {n[0] & 0x1F for n in nals} >= {7, 8, 5}  # SPS, PPS, IDR slice
    assert timestamp == 7 * VIDEO_RATE // 30
    assert all(len(p) <= MTU_PAYLOAD for p in payloads)


def vp8_descriptor(payload: bytes) -> tuple[int, int, int, bytes]:
    """(S bit, PID, picture id, data) from a VP8 payload descriptor (RFC 7741 §4.2)."""
    first = payload[0]
    start, pid = (first >> 4) & 1, first & 0x07
    offset = 1
    picture_id = -1
    if first & 0x80:  # X: extension octet
        ext = payload[1]
        offset = 2
        if ext & 0x80:  # I: picture id, M bit for 15 bits
            if payload[2] & 0x80:
                picture_id = struct.unpack_from("!H", payload, 2)[0] & 0x7FFF
                offset += 2
            else:
                picture_id = payload[2]
                offset += 1
        offset += bool(ext & 0x40) + bool(ext & 0x30)
    return start, pid, picture_id, payload[offset:]


def test_vp8_descriptor_marks_the_partition_start_and_numbers_pictures() -> None:
    pack = make_packer("vp8")
    frames = [body(3000, 9), body(200, 10), body(MTU_PAYLOAD * 2, 11)]
    picture_ids = []
    for index, frame in enumerate(frames):
        payloads, timestamp = pack(av_packet(frame, index * 3000, Fraction(1, 90_000)))
        assert timestamp == index * 3000
        read = [vp8_descriptor(p) for p in payloads]
        assert [s for s, _, _, _ in read] == [1] + [0] * (len(read) - 1)
        assert {pid for _, pid, _, _ in read} == {0}
        assert len({picture for _, _, picture, _ in read}) == 1, "one picture id per frame"
        picture_ids.append(read[0][2])
        assert b"".join(data for _, _, _, data in read) == frame
        assert all(len(p) <= MTU_PAYLOAD for p in payloads)
    assert picture_ids[1] == (picture_ids[0] + 1) % 0x8000
    assert picture_ids[2] == (picture_ids[1] + 1) % 0x8000


def test_vp8_packers_are_per_encoder() -> None:
    """Every viewer of one encoder sees the same picture ids: numbering is the packer's."""
    one, two = make_packer("vp8"), make_packer("vp8")
    frame = av_packet(body(100, 12), 0, Fraction(1, 90_000))
    first = vp8_descriptor(two(frame)[0][0])[2]
    one(frame), one(frame)
    assert vp8_descriptor(two(frame)[0][0])[2] == (first + 1) % 0x8000


def test_opus_is_sent_as_is_with_a_48khz_timestamp() -> None:
    pack = make_packer("opus")
    data = body(120, 13)
    payloads, timestamp = pack(av_packet(data, 960 * 5, Fraction(1, 48_000)))
    assert (payloads, timestamp) == ((data,), 4800)
    assert pack(av_packet(data, None, Fraction(1, 48_000)))[1] == 0
    assert pack(av_packet(data, 2, Fraction(1, 50)))[1] == 1920  # 20 ms blocks, any time base
