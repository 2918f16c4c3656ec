"""The clock code survives drawing, noise and compression, and says so when absent."""

from __future__ import annotations

import av
import numpy as np
import pytest

from agent.clock import VIDEO_TIME_BASE
from agent.media.encoder import VideoEncoderSettings, open_video_codec
from agent.sources.clockcode import delay_ms, draw_clock_code, read_clock_code
from agent.sources.synthetic import SyntheticCamera, SyntheticDocument


def test_layout_matches_the_documented_blocks() -> None:
    luma = np.zeros((48, 800), np.uint8)
    draw_clock_code(luma, 0x80000001)
    assert luma[0, 0] == 235 and luma[23, 23] == 235  # bit 31 → block 0 white
    assert luma[0, 24] == 16  # bit 30 → block 1 black
    assert luma[12, 31 * 24 + 12] == 235  # bit 0 → block 31 white
    assert luma[24, 0] == 0  # nothing drawn below row 23


def test_round_trip_modulo_2_32() -> None:
    luma = np.full((720, 1280), 128, np.uint8)
    wall_ms = 1_795_398_863_015
    draw_clock_code(luma, wall_ms)
    assert read_clock_code(luma) == wall_ms % 2**32


def test_too_small_pictures_carry_no_code() -> None:
    luma = np.full((240, 320), 128, np.uint8)
    draw_clock_code(luma, 42)
    assert (luma == 128).all()


def test_no_code_reads_as_none() -> None:
    assert read_clock_code(np.full((720, 1280), 128, np.uint8)) is None
    assert read_clock_code(np.zeros((10, 10), np.uint8)) is None


def test_delay_wraps_around() -> None:
    assert delay_ms(2**32 - 10, 5) == 15
    assert delay_ms(100, 40) == -60


def test_code_survives_h264_on_both_cards() -> None:
    for card in (
        SyntheticCamera("camera", 800, 450, 30),
        SyntheticDocument("document", 960, 540, 15),
    ):
        encoder = open_video_codec(
            VideoEncoderSettings(
                codec="h264",
                width=card.width,
                height=card.height,
                fps=card.fps,
                bitrate_kbps=800,
                keyframe_interval_s=2.0,
                h264_preset="ultrafast",
                threads=1,
            )
        )
        decoder = av.CodecContext.create("h264", "r")
        decoded = []
        for n in range(5):
            frame = av.VideoFrame.from_ndarray(card.render(n, 123_456_789 + n), format="yuv420p")
            frame.pts = n * 90_000 // card.fps
            frame.time_base = VIDEO_TIME_BASE
            for packet in encoder.encode(frame):
                decoded += decoder.decode(packet)
        codes = [read_clock_code(f.to_ndarray(format="gray")) for f in decoded]
        assert codes and codes == [123_456_789 + i for i in range(len(codes))]


@pytest.mark.parametrize(("width", "height"), [(640, 360), (320, 180)])
def test_the_code_reads_back_on_a_scaled_layer(width: int, height: int) -> None:
    """A quality layer scales the captured picture, code and all (agent/media/layers.py)."""
    luma = np.full((720, 1280), 128, np.uint8)
    draw_clock_code(luma, 1_234_567)
    chroma = np.full((360, 1280), 128, np.uint8)
    frame = av.VideoFrame.from_ndarray(np.vstack([luma, chroma]), format="yuv420p")
    small = frame.reformat(width=width, height=height).to_ndarray(format="gray")
    assert read_clock_code(small, width / 1280) == 1_234_567
    assert read_clock_code(small) is None  # read at full scale it is no code
