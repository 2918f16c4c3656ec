"""agent/media/layers.py and the encoder's scaling and thinning: each camera's qualities, and a
picture scaled and its frame rate thinned once per layer."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from agent.clock import MediaClock
from agent.config import VideoSourceConfig
from agent.media.encoder import VideoEncoder, VideoEncoderSettings, scaled
from agent.media.layers import layers_of
from agent.sources.base import RawVideoFrame


def test_the_default_cameras_layers() -> None:
    camera = layers_of("camera", VideoSourceConfig())
    assert [(x.name, x.width, x.height, x.fps, x.bitrate_kbps) for x in camera] == [
        ("high", 1280, 720, 30, 2000),
        ("mid", 640, 360, 30, 450),
        ("low", 320, 180, 20, 150),
    ]
    document = layers_of(
        "document", VideoSourceConfig(width=1920, height=1080, fps=15, bitrate_kbps=2000)
    )
    assert [(x.name, x.width, x.height, x.fps, x.bitrate_kbps) for x in document] == [
        ("high", 1920, 1080, 15, 2000),
        ("low", 1280, 720, 6, 300),
    ]
    assert document[1].keyframe_interval_s == 10.0 and document[1].rate_buffer_s == 2.0


def test_a_small_picture_has_fewer_layers() -> None:
    small = layers_of("camera", VideoSourceConfig(width=320, height=180, bitrate_kbps=300))
    assert [x.name for x in small] == ["high", "mid"]  # no layer under 160 pixels wide
    cheap = layers_of("document", VideoSourceConfig(width=640, height=480, fps=5, bitrate_kbps=200))
    assert [x.name for x in cheap] == ["high"]  # nothing cheaper and smaller below it


@pytest.mark.parametrize(("width", "height"), [(640, 360), (320, 180), (1280, 720)])
def test_a_picture_is_scaled_to_its_layer(width: int, height: int) -> None:
    luma = np.tile(np.arange(1280, dtype=np.uint16) % 256, (720, 1)).astype(np.uint8)
    data = np.vstack([luma, np.full((360, 1280), 128, np.uint8)])
    frame = scaled(RawVideoFrame(data, 1280, 720, 0.0), width, height)
    assert (frame.width, frame.height, frame.format.name) == (width, height, "yuv420p")
    out = frame.to_ndarray()
    assert out.shape == (height * 3 // 2, width)
    assert abs(int(out[height:].mean()) - 128) <= 1  # the chroma planes stay in place


async def test_a_layer_keeps_its_frame_rate_from_a_faster_camera() -> None:
    """30 → 20 fps keeps two pictures in three; a keyframe asked for is never thinned."""
    published: list[object] = []
    settings = VideoEncoderSettings("h264", 320, 180, 20, 150, layer="low", source_fps=30)
    encoder = VideoEncoder(
        "camera", settings, MediaClock(), asyncio.get_running_loop(), published.append
    )
    kept = [encoder._wanted(i / 30) for i in range(90)]
    assert sum(kept) == 60
    data = np.full((1080, 1280), 128, np.uint8)
    encoder._due = 10.0  # the next picture is due at 10 s
    encoder._encode(RawVideoFrame(data, 1280, 720, 9.9))  # too soon: thinned
    assert encoder.frames_thinned == 1
    encoder.request_keyframe()
    encoder._encode(RawVideoFrame(data, 1280, 720, 9.92))  # too soon, but a keyframe is asked
    assert encoder.frames_thinned == 1 and encoder.forced_keyframes == 1
