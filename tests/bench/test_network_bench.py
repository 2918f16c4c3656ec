"""``make bench-network`` keeps working: its pure parts, and one short shaped row end to end
(the agent and an aiortc pupil in network namespaces, the pupil's link at 1.5 Mbit/s by tc tbf).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from bench import netns
from bench.network import measure
from bench.network_report import (
    FOUR_UNSHAPED,
    HEADING,
    Measured,
    Row,
    checks,
    put_section,
    section_of,
    table,
)
from bench.thin_receiver import CompleteFramesOnly, audio_loss_percent, is_keyframe, longest_gap

IDR = b"\x00\x00\x00\x01\x67sps\x00\x00\x00\x01\x68pps\x00\x00\x00\x01\x65slice"
P_FRAME = b"\x00\x00\x00\x01\x41slice"


def packet(seq: int, timestamp: int, data: bytes, marker: bool = True) -> RtpPacket:
    p = RtpPacket(payload_type=102, marker=int(marker), sequence_number=seq, timestamp=timestamp)
    p._data = data  # type: ignore[attr-defined]  # what aiortc's depayloader leaves there
    return p


def frames_out(buffer: JitterBuffer, packets: list[RtpPacket]) -> list[int]:
    out = []
    for p in packets:
        _, frame = buffer.add(p)
        if frame is not None:
            out.append(frame.timestamp)
    return out


def stream_with_a_loss() -> list[RtpPacket]:
    """Keyframe (2 packets), P, P; the packet of frame 4 is lost; P × 6; keyframe; P × 8."""
    packets = [packet(0, 0, IDR, marker=False), packet(1, 0, b"rest"), packet(2, 1, P_FRAME)]
    packets.append(packet(3, 2, P_FRAME))
    packets += [packet(seq, seq, P_FRAME) for seq in range(5, 11)]
    packets.append(packet(11, 11, IDR))
    packets += [packet(seq, seq, P_FRAME) for seq in range(12, 20)]
    return packets


def test_a_frame_after_a_loss_is_held_back_until_the_next_keyframe() -> None:
    stock = frames_out(JitterBuffer(capacity=4, is_video=True), stream_with_a_loss())
    ours = frames_out(CompleteFramesOnly(capacity=4, is_video=True), stream_with_a_loss())
    assert any(5 <= t < 11 for t in stock)  # aiortc would hand the decoder a broken chain
    assert ours[:2] == [0, 1]
    assert not any(2 < t < 11 for t in ours)
    assert 11 in ours and any(t > 11 for t in ours)


def test_a_stream_must_start_on_a_keyframe() -> None:
    packets = [packet(seq, seq, P_FRAME) for seq in range(5)] + [packet(5, 5, IDR)]
    packets.append(packet(6, 6, P_FRAME))
    assert frames_out(CompleteFramesOnly(capacity=16, is_video=True), packets) == [5]


def test_keyframes_are_recognised() -> None:
    assert is_keyframe(IDR)
    assert not is_keyframe(P_FRAME)
    assert is_keyframe(b"\x10\x02\x00")  # VP8 frame tag, key-frame bit clear
    assert not is_keyframe(b"\x11\x02\x00")


def test_audio_loss_counts_sequence_numbers_that_never_arrived() -> None:
    arrivals = [(t * 0.02, (65530 + t) % 65536) for t in range(100) if t % 10 != 3]
    assert audio_loss_percent(arrivals, 0.5, 1.5) == 10.0
    assert audio_loss_percent(arrivals[:5], 0.5, 1.5) == 100.0


def test_longest_gap_counts_the_window_edges() -> None:
    assert longest_gap([1.0, 1.1, 3.0], 0.0, 4.0) == 1.9
    assert longest_gap([], 0.0, 4.0) == 4.0


def test_the_section_is_replaced_and_kept() -> None:
    bench = "# Performance\n\ntable\n"
    first = put_section(bench, "one\n")
    assert first == f"# Performance\n\ntable\n\n{HEADING}\n\none\n"
    assert put_section(first, "two\n") == f"# Performance\n\ntable\n\n{HEADING}\n\ntwo\n"
    assert section_of(first) == f"{HEADING}\n\none\n"
    assert section_of(bench) == ""


def test_the_table_and_checks_say_fail_when_nothing_arrives() -> None:
    nothing = {"error": "receiver exited 1"}
    results = [Measured(Row("800 kbit/s", (800,)), [nothing])]
    assert "failed to join" in table(results)[2]
    assert checks(results)[2].endswith("| FAIL |")


def test_the_mixed_class_is_judged_against_the_same_four_without_the_thin_pupil() -> None:
    """Its four unshaped pupils against the four-unshaped row, not against one pupil alone."""

    def pupil(p95_ms: int) -> dict[str, Any]:
        return {"camera": {"fps": 30.0}, "document": {"fps": 15.0}, "delays_ms": [p95_ms] * 20}

    alone = Measured(Row("unshaped", (None,)), [pupil(40)])
    four = Measured(Row(FOUR_UNSHAPED, (None,) * 4), [pupil(50), pupil(52), pupil(55), pupil(51)])
    mixed_row = Row("mixed class: 4 unshaped + 1 at 800 kbit/s", (None, None, None, None, 800))
    fine = Measured(mixed_row, [pupil(60), pupil(58), pupil(50), pupil(52), pupil(150)])
    assert checks([alone, four, fine])[-1].endswith(
        "glass-to-glass p95 60.0 ms vs 55.0 ms for the four without the thin pupil | PASS |"
    )
    hurt = Measured(mixed_row, [pupil(67), pupil(58), pupil(50), pupil(52), pupil(150)])
    assert checks([alone, four, hurt])[-1].endswith("| FAIL |")
    assert not any("mixed class" in row for row in checks([alone, fine]))


@pytest.mark.slow
def test_one_shaped_row_end_to_end(tmp_path: Path) -> None:
    row = Row("1.5 Mbit/s", (1500,))
    try:
        results = asyncio.run(measure(tmp_path, (row,), warmup=1.0, seconds=3.0))
    except netns.NamespaceError as exc:
        pytest.skip(str(exc))
    pupil = results[0].pupils[0]
    assert "error" not in pupil, pupil
    assert pupil["seconds"] >= 2.9
    assert pupil["audio_loss"] < 50  # the pupil joined and sound arrives through the link
    assert {"fps", "freeze_s", "size"} <= set(pupil["camera"])
    assert table(results)[2].startswith("| 1.5 Mbit/s |")
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{netns.PREFIX}{os.getpid()}-" not in listing  # torn down
