"""A file-backed camera through OpenCV: real frames, then a placeholder while it is gone, then
real frames again on the same sink — what pupils see when a camera is unplugged and replugged."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from agent.clock import MediaClock
from agent.config import VideoSourceConfig
from agent.sources.base import RawVideoFrame, SourceState
from agent.sources.camera import DeviceKind, OpenCVCamera, device_kind, device_path
from agent.sources.placeholder import placeholder_i420


def write_clip(path: Path, width: int = 320, height: int = 240, frames: int = 10) -> None:
    """``frames`` pictures at 10 fps: left half white, right half dark, a moving grey disc."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10, (width, height))
    assert writer.isOpened()
    for n in range(frames):
        picture = np.full((height, width, 3), 20, np.uint8)
        picture[:, : width // 2] = 235
        cv2.circle(picture, (20 + n * 25, height // 4), 10, (128, 128, 128), -1)
        writer.write(picture)
    writer.release()


class Collector:
    def __init__(self) -> None:
        self.frames: list[RawVideoFrame] = []
        self.lock = threading.Lock()

    def __call__(self, frame: RawVideoFrame) -> None:
        with self.lock:
            self.frames.append(frame)

    def snapshot(self) -> list[RawVideoFrame]:
        with self.lock:
            return list(self.frames)

    def wait_for(
        self, predicate: Callable[[list[RawVideoFrame]], bool], timeout: float = 5.0
    ) -> list[RawVideoFrame]:
        """Frames delivered from now on, once ``predicate`` holds for them."""
        start = len(self.snapshot())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.snapshot()[start:]
            if predicate(new):
                return new
            time.sleep(0.02)
        raise AssertionError("the expected frames did not arrive in time")


def real(frames: list[RawVideoFrame]) -> list[RawVideoFrame]:
    return [f for f in frames if not f.placeholder]


def placeholders(frames: list[RawVideoFrame]) -> list[RawVideoFrame]:
    return [f for f in frames if f.placeholder]


def make_camera(device: str | Path, width: int = 320, height: int = 240) -> OpenCVCamera:
    cfg = VideoSourceConfig(
        device=str(device), width=width, height=height, fps=10, bitrate_kbps=300
    )
    return OpenCVCamera("camera", cfg, retry_interval=0.2)


def device_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "source-camera"]


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    write_clip(path)
    return path


REAL_VIDEO_CAPTURE = cv2.VideoCapture


class SpyCapture:
    """Wraps ``cv2.VideoCapture`` to count opens and releases; can fail a read on demand."""

    opened: list[SpyCapture] = []  # noqa: RUF012 (reset by the fixture)
    fail_read_at: int | None = None

    def __init__(self, *args: Any) -> None:
        self.inner = REAL_VIDEO_CAPTURE(*args)
        self.released = False
        self.reads = 0
        SpyCapture.opened.append(self)

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.reads += 1
        if len(SpyCapture.opened) == 1 and self.reads == SpyCapture.fail_read_at:
            raise cv2.error("simulated driver failure")
        ok, picture = self.inner.read()
        return bool(ok), picture

    def release(self) -> None:
        self.released = True
        self.inner.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[SpyCapture]]:
    SpyCapture.opened = []
    SpyCapture.fail_read_at = None
    monkeypatch.setattr(cv2, "VideoCapture", SpyCapture)
    yield SpyCapture


def test_device_kinds() -> None:
    assert device_kind("0") is DeviceKind.V4L2 and device_path("0") == "/dev/video0"
    assert device_kind("/dev/video2") is DeviceKind.V4L2
    assert device_kind("/dev/v4l/by-id/usb-cam-video-index0") is DeviceKind.V4L2
    assert device_kind("rtsp://10.0.0.9/stream") is DeviceKind.NETWORK
    assert device_path("https://cam.local/feed") is None
    assert device_kind("/srv/clip.mp4") is DeviceKind.FILE


def test_file_frames_are_i420_and_paced(clip: Path) -> None:
    source, sink = make_camera(clip), Collector()
    source.start(sink, MediaClock())
    try:
        frames = sink.wait_for(lambda fs: len(real(fs)) >= 16)
        status = source.status()
    finally:
        source.stop()
    assert not placeholders(frames)
    first = frames[0]
    assert first.data.shape == (360, 320) and first.data.dtype == np.uint8
    assert (first.width, first.height) == (320, 240)
    assert status.state == SourceState.OK and status.detail == ""
    assert status.extra["placeholder"] is False and status.extra["frames"] >= 16
    assert 8.5 <= status.extra["fps"] <= 11.5  # the file is paced at 10 fps, loop after loop
    times = [f.capture_time for f in frames]
    assert 8.5 <= (len(times) - 1) / (times[-1] - times[0]) <= 11.5
    luma = first.data[:240]
    assert luma[120:, :150].mean() > 200 and luma[120:, 170:].mean() < 50


def test_other_size_is_resized(clip: Path) -> None:
    source, sink = make_camera(clip, width=160, height=120), Collector()
    source.start(sink, MediaClock())
    try:
        frames = sink.wait_for(lambda fs: len(real(fs)) >= 3)
    finally:
        source.stop()
    assert all(f.data.shape == (180, 160) and (f.width, f.height) == (160, 120) for f in frames)
    luma = frames[0].data[:120]
    assert luma[60:, :75].mean() > 200 and luma[60:, 85:].mean() < 50


def test_file_disappears_and_comes_back_on_the_same_sink(clip: Path, tmp_path: Path) -> None:
    source, sink = make_camera(clip), Collector()
    source.start(sink, MediaClock())
    try:
        sink.wait_for(lambda fs: len(real(fs)) >= 2)
        assert source.status().state == SourceState.OK

        clip.rename(tmp_path / "away.mp4")  # unplugged: noticed when the clip loops (≤ 1 s)
        gone = sink.wait_for(lambda fs: len(placeholders(fs)) >= 3)
        status = source.status()
        assert status.state == SourceState.MISSING and status.detail == "device not found"
        assert status.extra["placeholder"] is True
        card = placeholders(gone)[0]
        assert card.data is placeholder_i420(320, 240) and card.data.shape == (360, 320)
        assert 8.0 <= source.status().extra["fps"] <= 12.0  # the card keeps the nominal rate

        (tmp_path / "away.mp4").rename(clip)  # plugged back in
        back = sink.wait_for(lambda fs: len(real(fs)) >= 2)
        status = source.status()
        assert status.state == SourceState.OK and status.extra["placeholder"] is False
        assert real(back)[0].data.shape == (360, 320)
    finally:
        source.stop()
    assert source.status().state == SourceState.STOPPED


def test_missing_device_sends_placeholder_without_crashing() -> None:
    source, sink = make_camera("/dev/video99"), Collector()
    source.start(sink, MediaClock())
    try:
        frames = sink.wait_for(lambda fs: len(fs) >= 5)
        status = source.status()
    finally:
        source.stop()
    assert status.state == SourceState.MISSING and status.detail == "device not found"
    assert all(f.placeholder and f.data.shape == (360, 320) for f in frames)
    assert status.extra["placeholder"] is True


def test_a_file_that_is_not_a_video_is_an_error(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    source, sink = make_camera(notes), Collector()
    source.start(sink, MediaClock())
    try:
        frames = sink.wait_for(lambda fs: len(fs) >= 3)
        status = source.status()
    finally:
        source.stop()
    assert status.state == SourceState.ERROR and status.detail == "device cannot be opened"
    assert all(f.placeholder for f in frames)


def test_stop_is_prompt_releases_the_device_and_ends_the_thread(
    clip: Path, spy: type[SpyCapture]
) -> None:
    source, sink = make_camera(clip), Collector()
    source.start(sink, MediaClock())
    source.start(sink, MediaClock())  # a second start is a no-op: still one thread
    try:
        sink.wait_for(lambda fs: len(real(fs)) >= 3)
        assert len(device_threads()) == 1
    finally:
        began = time.monotonic()
        source.stop()
    assert time.monotonic() - began < 1.0  # not the 3 s retry wait, nor a hung read
    assert not device_threads()
    assert spy.opened and all(capture.released for capture in spy.opened)
    source.stop()  # idempotent
    assert source.status().state == SourceState.STOPPED


def test_driver_exception_is_reported_and_recovered(clip: Path, spy: type[SpyCapture]) -> None:
    spy.fail_read_at = 3  # the first capture raises on its third read
    source, sink = make_camera(clip), Collector()
    source.start(sink, MediaClock())
    try:
        sink.wait_for(lambda fs: bool(placeholders(fs)))
        status = source.status()
        assert status.state == SourceState.ERROR
        assert status.detail == "device stopped delivering pictures"
        assert spy.opened[0].released
        sink.wait_for(lambda fs: len(real(fs)) >= 2)  # reopened after retry_interval
        assert source.status().state == SourceState.OK
    finally:
        source.stop()
    assert not device_threads()


def test_sink_exception_does_not_kill_the_thread(clip: Path) -> None:
    calls = 0
    delivered = Collector()

    def flaky_sink(frame: RawVideoFrame) -> None:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("a bug downstream")
        delivered(frame)

    source = make_camera(clip)
    source.start(flaky_sink, MediaClock())
    try:
        delivered.wait_for(lambda fs: len(real(fs)) >= 3)
        assert source.status().state == SourceState.OK
        assert len(device_threads()) == 1
    finally:
        source.stop()
