"""A file-backed camera through OpenCV: real frames, then a placeholder while it is gone, then
real frames again on the same sink — what pupils see when a camera is unplugged and replugged."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from agent.clock import MediaClock
from agent.config import VideoSourceConfig
from agent.sources.base import RawVideoFrame, SourceState
from agent.sources.camera import OpenCVCamera


def write_clip(path: Path, width: int = 320, height: int = 240, frames: int = 10) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (width, height))
    assert writer.isOpened()
    for n in range(frames):
        picture = np.full((height, width, 3), 40, np.uint8)
        cv2.circle(picture, (20 + n * 25, height // 2), 20, (255, 255, 255), -1)
        writer.write(picture)
    writer.release()


class Collector:
    def __init__(self) -> None:
        self.frames: list[RawVideoFrame] = []
        self.lock = threading.Lock()

    def __call__(self, frame: RawVideoFrame) -> None:
        with self.lock:
            self.frames.append(frame)

    def wait_for(self, predicate: Callable[[RawVideoFrame], bool], timeout: float = 8.0) -> None:
        start = len(self.frames)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(predicate(f) for f in self.frames[start:]):
                    return
            time.sleep(0.02)
        raise AssertionError("no such frame arrived in time")


def camera(path: Path, width: int = 320, height: int = 240) -> OpenCVCamera:
    cfg = VideoSourceConfig(device=str(path), width=width, height=height, fps=10, bitrate_kbps=300)
    return OpenCVCamera("camera", cfg, retry_interval=0.2)


def test_file_camera_disappears_and_comes_back(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip)
    source, sink = camera(clip), Collector()
    source.start(sink, MediaClock())
    try:
        sink.wait_for(lambda f: not f.placeholder)
        assert source.status().state == SourceState.OK
        real = next(f for f in sink.frames if not f.placeholder)
        assert real.data.shape == (360, 320) and real.data.dtype == np.uint8

        clip.rename(tmp_path / "away.mp4")  # unplugged: noticed at the end of the clip
        sink.wait_for(lambda f: f.placeholder)
        status = source.status()
        assert status.state == SourceState.MISSING and status.detail == "device not found"
        assert status.extra["placeholder"] is True

        (tmp_path / "away.mp4").rename(clip)  # plugged back in
        sink.wait_for(lambda f: not f.placeholder)
        assert source.status().state == SourceState.OK
    finally:
        source.stop()
    assert source.status().state == SourceState.STOPPED


def test_other_size_is_resized_and_paced(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    write_clip(clip, frames=30)
    source, sink = camera(clip, width=160, height=120), Collector()
    source.start(sink, MediaClock())
    try:
        time.sleep(1.2)
    finally:
        source.stop()
    real = [f for f in sink.frames if not f.placeholder]
    assert real and all(f.data.shape == (180, 160) for f in real)
    assert 6 <= len(real) <= 16  # ~10 fps, not as fast as the file can be read


def test_missing_device_sends_placeholder_without_crashing() -> None:
    source, sink = camera(Path("/dev/video99")), Collector()
    source.start(sink, MediaClock())
    try:
        sink.wait_for(lambda f: f.placeholder)
        assert source.status().state == SourceState.MISSING
        assert sink.frames[0].data.shape == (360, 320)
    finally:
        source.stop()
