"""MediaPipeline: the VP8 encoder of a source runs exactly while some viewer needs it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from agent.clock import MediaClock
from agent.config import config_from_dict
from agent.media.fanout import QueueClosed
from agent.media.pipeline import MediaPipeline
from tests.conftest import media_threads, until


@pytest.fixture
async def pipeline() -> AsyncIterator[MediaPipeline]:
    config = config_from_dict(
        {
            "camera": {"width": 320, "height": 180, "bitrate_kbps": 300},
            "document": {"width": 320, "height": 240, "fps": 15, "bitrate_kbps": 300},
        }
    )
    media = MediaPipeline(config, MediaClock(), asyncio.get_running_loop())
    await media.start()
    try:
        yield media
    finally:
        await media.stop()
        await until(lambda: not media_threads(), 5, "media threads ended")


def codecs(pipeline: MediaPipeline, source: str = "camera") -> list[str]:
    return [codec for codec, layer in pipeline.video[source].running() if layer == "high"]


async def test_vp8_encoder_starts_and_stops_with_its_viewers(pipeline: MediaPipeline) -> None:
    assert codecs(pipeline) == ["h264"]
    first = pipeline.subscribe_video("camera", "vp8")
    second = pipeline.subscribe_video("camera", "vp8")
    assert first is not None and second is not None
    assert codecs(pipeline, "document") == ["h264"]
    item = await asyncio.wait_for(first.get(), 5)
    assert item.keyframe and item.payloads  # a joiner starts on a keyframe, already cut for RTP
    pipeline.unsubscribe_video("camera", "vp8", first)
    await asyncio.sleep(0.1)
    assert codecs(pipeline) == ["vp8"]  # the other viewer still needs it (H.264: nobody)
    pipeline.unsubscribe_video("camera", "vp8", second)
    await until(lambda: codecs(pipeline) == ["h264"], 5, "VP8 encoder dropped")
    await until(lambda: "encode-camera-vp8-high" not in media_threads(), 5, "VP8 thread ended")


async def test_a_viewer_arriving_as_the_last_one_leaves_keeps_the_encoder(
    pipeline: MediaPipeline,
) -> None:
    """The drop of an unused encoder is scheduled; a VP8 viewer that subscribes before it runs
    must not have its queue closed under it (it would get no video at all)."""
    leaving = pipeline.subscribe_video("camera", "vp8")
    assert leaving is not None
    await asyncio.wait_for(leaving.get(), 5)
    pipeline.unsubscribe_video("camera", "vp8", leaving)
    arriving = pipeline.subscribe_video("camera", "vp8")  # same loop iteration
    assert arriving is not None
    await asyncio.sleep(0.2)  # the scheduled drop has run
    assert codecs(pipeline) == ["vp8"]
    try:
        item = await asyncio.wait_for(arriving.get(), 5)
    except QueueClosed:
        pytest.fail("the arriving viewer's queue was closed by the drop of the encoder")
    assert item.keyframe
    pipeline.unsubscribe_video("camera", "vp8", arriving)
    await until(lambda: codecs(pipeline) == ["h264"], 5, "VP8 encoder dropped at last")


async def test_the_h264_top_layer_idles_while_only_vp8_viewers_watch(
    pipeline: MediaPipeline,
) -> None:
    """A class of Firefox pupils (VP8 only): the H.264 top layer, which otherwise runs the
    whole class, stops while nobody watches it and the camera is encoded in VP8, and comes back
    for an H.264 viewer or when the last VP8 layer stops. The other camera is not touched."""
    firefox = pipeline.subscribe_video("camera", "vp8")
    assert firefox is not None
    await until(lambda: codecs(pipeline) == ["vp8"], 5, "H.264 top layer stopped")
    await until(lambda: "encode-camera-h264-high" not in media_threads(), 5, "its thread ended")
    assert codecs(pipeline, "document") == ["h264"]
    chromium = pipeline.subscribe_video("camera", "h264")  # an H.264 pupil climbs to the top
    assert chromium is not None
    assert (await asyncio.wait_for(chromium.get(), 5)).keyframe
    await asyncio.sleep(0.2)
    assert sorted(codecs(pipeline)) == ["h264", "vp8"]
    pipeline.unsubscribe_video("camera", "h264", chromium)
    await until(lambda: codecs(pipeline) == ["vp8"], 5, "H.264 top layer stopped again")
    pipeline.unsubscribe_video("camera", "vp8", firefox)
    await until(lambda: codecs(pipeline) == ["h264"], 5, "H.264 top layer back, VP8 gone")
    stream = pipeline.video["camera"].get("h264")
    assert stream is not None
    await until(lambda: stream.encoder.frames_encoded > 0, 5, "the H.264 top layer encodes")
