"""MJPEG cameras: JPEG bytes decoded by libjpeg-turbo straight to I420 (agent/sources/mjpeg.py),
through a real MJPEG file played by OpenCV's FFmpeg backend and through a stand-in for the V4L2
backend (no camera here: it hands JPEG bytes once ``CAP_PROP_CONVERT_RGB`` is off, as
OpenCV's V4L2 backend does), and OpenCV's decode when the binding is missing."""

from __future__ import annotations

import logging
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from agent.clock import MediaClock
from agent.config import VideoSourceConfig
from agent.errors import AgentError
from agent.sources import mjpeg
from agent.sources.base import RawVideoFrame, SourceState
from agent.sources.camera import MAX_FAILED_READS, MJPG, OpenCVCamera

pytest.importorskip("turbojpeg")
if mjpeg.turbojpeg() is None:
    pytest.skip("libturbojpeg0 is not installed (make setup)", allow_module_level=True)

SAMPLING = {
    "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
    "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    "444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    "411": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411,
}


def picture(width: int, height: int, shift: int = 0) -> np.ndarray:
    """BGR: a smooth colour gradient (chroma that varies vertically, so a 4:2:2 → 4:2:0 error
    shows) with a dark box at ``shift``."""
    ys, xs = np.mgrid[0:height, 0:width]
    bgr = np.empty((height, width, 3), np.uint8)
    bgr[..., 0] = 40 + 170 * xs // width
    bgr[..., 1] = 90 + 60 * ((xs + ys) % 64) // 64
    bgr[..., 2] = 40 + 170 * ys // height
    bgr[height // 4 : height // 2, shift : shift + width // 8] = 20
    return bgr


def jpeg(bgr: np.ndarray, sampling: str = "422", quality: int = 95) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR]
    ok, data = cv2.imencode(".jpg", bgr, [*params, SAMPLING[sampling]])
    assert ok
    return data.tobytes()


def reference_i420(data: bytes, width: int, height: int) -> np.ndarray:
    """What OpenCV's path makes of the JPEG: decoded to BGR, resized, converted."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr.shape[:2] != (height, width):
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)


def planes_error(got: np.ndarray, want: np.ndarray, height: int) -> tuple[float, float]:
    """Mean absolute error of luma and of chroma."""
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    return float(diff[:height].mean()), float(diff[height:].mean())


@pytest.mark.parametrize("sampling", ["422", "420", "444", "411"])
def test_decode_is_i420_of_the_picture(sampling: str) -> None:
    data = jpeg(picture(320, 240), sampling)
    decoder = mjpeg.MjpegDecoder(mjpeg.turbojpeg(), 320, 240)
    got = decoder.decode(np.frombuffer(data, np.uint8))
    assert got.shape == (360, 320) and got.dtype == np.uint8
    luma, chroma = planes_error(got, reference_i420(data, 320, 240), 240)
    assert luma < 1.0 and chroma < 1.0, (luma, chroma)  # full range left: 2.7


def test_greyscale_jpeg_has_neutral_chroma() -> None:
    grey = cv2.cvtColor(picture(320, 240), cv2.COLOR_BGR2GRAY)
    ok, data = cv2.imencode(".jpg", grey)
    assert ok
    got = mjpeg.MjpegDecoder(mjpeg.turbojpeg(), 320, 240).decode(data.tobytes())
    assert got.shape == (360, 320)
    want = reference_i420(data.tobytes(), 320, 240)
    assert np.abs(got[:240].astype(int) - want[:240]).mean() < 1.0
    assert np.all(got[240:] == 128)


@pytest.mark.parametrize(("width", "height"), [(640, 360), (1000, 562), (1600, 900)])
def test_another_size_than_configured(width: int, height: int) -> None:
    """1280×720 → 640×360 is libjpeg-turbo's 1/2 scale; 1000×562 is no scale of it (scaled to
    the next bigger, then resized); 1600×900 is bigger (resized)."""
    data = jpeg(picture(1280, 720))
    got = mjpeg.MjpegDecoder(mjpeg.turbojpeg(), width, height).decode(data)
    assert got.shape == (height * 3 // 2, width)
    luma, chroma = planes_error(got, reference_i420(data, width, height), height)
    assert luma < 1.0 and chroma < 1.5, (luma, chroma)


def test_scaled_decode_is_used_for_an_exact_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    turbo = mjpeg.turbojpeg()
    factors: list[Any] = []
    real = turbo.decode_to_yuv

    def spy(data: Any, scaling_factor: Any = None, pad: int = 4) -> Any:
        factors.append(scaling_factor)
        return real(data, scaling_factor=scaling_factor, pad=pad)

    monkeypatch.setattr(turbo, "decode_to_yuv", spy)
    decoder = mjpeg.MjpegDecoder(turbo, 640, 360)
    decoder.decode(jpeg(picture(1280, 720)))
    decoder.decode(jpeg(picture(640, 360)))  # the camera changed its size
    assert factors == [(1, 2), None]


def without_huffman_tables(data: bytes) -> bytes:
    """The JPEG without its DHT segments, as many UVC cameras send MJPEG (the decoder is to use
    the standard tables)."""
    out, i = bytearray(data[:2]), 2
    while data[i + 1] != 0xDA:  # up to the start of scan
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if data[i + 1] != 0xC4:
            out += data[i : i + 2 + length]
        i += 2 + length
    return bytes(out + data[i:])


def test_jpeg_without_huffman_tables_is_decoded() -> None:
    data = jpeg(picture(320, 240))
    stripped = without_huffman_tables(data)
    assert len(stripped) < len(data)
    decoder = mjpeg.MjpegDecoder(mjpeg.turbojpeg(), 320, 240)
    assert np.array_equal(decoder.decode(stripped), decoder.decode(data))


@pytest.mark.parametrize("data", [b"", b"not a jpeg at all", b"\xff\xd8\xff\xe0" + bytes(64)])
def test_garbage_is_a_clear_error(data: bytes) -> None:
    decoder = mjpeg.MjpegDecoder(mjpeg.turbojpeg(), 320, 240)
    with pytest.raises(mjpeg.MjpegDecodeError):
        decoder.decode(np.frombuffer(data, np.uint8))
    assert issubclass(mjpeg.MjpegDecodeError, AgentError)  # one exception tree


def test_missing_binding_is_logged_once_and_none(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "turbojpeg", None)  # import turbojpeg → ImportError
    monkeypatch.setattr(mjpeg, "_loaded", False)
    monkeypatch.setattr(mjpeg, "_turbo", None)
    with caplog.at_level(logging.WARNING, "agent.sources"):
        assert mjpeg.turbojpeg() is None
        assert mjpeg.turbojpeg() is None
    warnings = [r for r in caplog.records if "decoded by OpenCV" in r.getMessage()]
    assert len(warnings) == 1 and "PyTurboJPEG" in warnings[0].getMessage()


# -- through the camera ------------------------------------------------------------------------


def write_mjpeg(path: Path, frames: list[bytes], fps: int = 10) -> None:
    """An AVI of these JPEGs as they are (like a UVC camera's MJPEG, muxed untouched)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuvj422p"
        for n, data in enumerate(frames):
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts = stream, n, n
            packet.time_base = Fraction(1, fps)
            out.mux(packet)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "clip.avi"
    write_mjpeg(path, [jpeg(picture(320, 240, 20 * n)) for n in range(10)])
    return path


class Frames:
    def __init__(self) -> None:
        self.frames: list[RawVideoFrame] = []
        self.lock = threading.Lock()

    def __call__(self, frame: RawVideoFrame) -> None:
        with self.lock:
            self.frames.append(frame)

    def wait(self, count: int, timeout: float = 5.0) -> list[RawVideoFrame]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                real = [f for f in self.frames if not f.placeholder]
            if len(real) >= count:
                return real
            time.sleep(0.02)
        raise AssertionError(f"fewer than {count} pictures in {timeout} s")


def camera(device: str | Path) -> OpenCVCamera:
    cfg = VideoSourceConfig(device=str(device), width=320, height=240, fps=10, bitrate_kbps=300)
    return OpenCVCamera("camera", cfg, retry_interval=0.2)


def test_mjpeg_file_is_decoded_by_libjpeg_turbo(clip: Path) -> None:
    source, sink = camera(clip), Frames()
    source.start(sink, MediaClock())
    try:
        frames = sink.wait(12)  # past the end of the file: it loops
        status = source.status()
    finally:
        source.stop()
    assert status.state is SourceState.OK
    assert status.extra["decoder"] == "libjpeg-turbo" and status.extra["bad_pictures"] == 0
    assert status.extra["cpu_s"] > 0
    want = reference_i420(jpeg(picture(320, 240, 0)), 320, 240)
    assert frames[0].data.shape == (360, 320)
    assert max(planes_error(frames[0].data, want, 240)) < 1.0


def test_without_the_binding_opencv_decodes(clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mjpeg, "turbojpeg", lambda: None)
    source, sink = camera(clip), Frames()
    source.start(sink, MediaClock())
    try:
        frames = sink.wait(3)
        status = source.status()
    finally:
        source.stop()
    assert status.extra["decoder"] == "opencv"
    want = reference_i420(jpeg(picture(320, 240, 0)), 320, 240)
    assert max(planes_error(frames[0].data, want, 240)) < 1.0


class FakeV4L2:
    """Stands in for OpenCV's V4L2 backend on an MJPEG camera at 10 fps: BGR pictures, or the
    JPEG bytes as a 1×N row once ``CAP_PROP_CONVERT_RGB`` is off (cap_v4l.cpp does that)."""

    instances: list[FakeV4L2] = []  # noqa: RUF012 (reset by the fixture)
    fourcc = MJPG
    pictures: list[bytes] = []  # noqa: RUF012
    raw_bytes: bytes | None = None
    """If set, what the raw mode hands instead of the JPEG (a backend that garbles it)."""

    def __init__(self, *args: Any) -> None:
        self.args = args
        self.convert_rgb = True
        self.sets: list[tuple[int, float]] = []
        self.n = 0
        FakeV4L2.instances.append(self)

    def isOpened(self) -> bool:
        return True

    def set(self, prop: int, value: float) -> bool:
        self.sets.append((prop, value))
        if prop == cv2.CAP_PROP_CONVERT_RGB:
            self.convert_rgb = bool(value)
        return True

    def get(self, prop: int) -> float:
        return float(self.fourcc) if prop == cv2.CAP_PROP_FOURCC else 0.0

    def read(self) -> tuple[bool, np.ndarray]:
        time.sleep(0.1)
        data = self.pictures[self.n % len(self.pictures)]
        self.n += 1
        if self.convert_rgb:
            return True, cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        data = data if self.raw_bytes is None else self.raw_bytes
        return True, np.frombuffer(data, np.uint8).reshape(1, -1).copy()

    def release(self) -> None:
        pass


@pytest.fixture
def v4l2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """A device node path that exists (the camera checks its presence) and the stand-in."""
    node = Path("/dev/shm") / f"kit-test-video-{tmp_path.name}"
    node.touch()
    FakeV4L2.instances = []
    FakeV4L2.fourcc = MJPG
    FakeV4L2.raw_bytes = None
    FakeV4L2.pictures = [jpeg(picture(320, 240))]
    monkeypatch.setattr(cv2, "VideoCapture", FakeV4L2)
    yield node
    node.unlink()


def test_v4l2_mjpeg_camera_hands_its_jpeg_bytes(v4l2: Path) -> None:
    source, sink = camera(v4l2), Frames()
    source.start(sink, MediaClock())
    try:
        frames = sink.wait(3)
        status = source.status()
    finally:
        source.stop()
    device = FakeV4L2.instances[0]
    assert device.args[1] == cv2.CAP_V4L2
    assert (cv2.CAP_PROP_FOURCC, MJPG) in device.sets
    assert (cv2.CAP_PROP_CONVERT_RGB, 0) in device.sets and not device.convert_rgb
    assert status.extra["decoder"] == "libjpeg-turbo"
    want = reference_i420(FakeV4L2.pictures[0], 320, 240)
    assert max(planes_error(frames[-1].data, want, 240)) < 1.0


def test_v4l2_camera_without_mjpeg_keeps_opencv_conversion(v4l2: Path) -> None:
    FakeV4L2.fourcc = cv2.VideoWriter.fourcc(*"YUYV")  # the camera refused MJPG
    source, sink = camera(v4l2), Frames()
    source.start(sink, MediaClock())
    try:
        sink.wait(3)
        status = source.status()
    finally:
        source.stop()
    assert FakeV4L2.instances[0].convert_rgb
    assert status.extra["decoder"] == "opencv"


def test_a_bad_picture_is_left_out_and_counted(v4l2: Path) -> None:
    FakeV4L2.pictures = [jpeg(picture(320, 240)), b"\xff\xd8garbage"]
    source, sink = camera(v4l2), Frames()
    source.start(sink, MediaClock())
    try:
        sink.wait(3)
        status = source.status()
    finally:
        source.stop()
    assert status.state is SourceState.OK
    assert status.extra["bad_pictures"] >= 2


def test_nothing_but_garbage_is_a_device_error(v4l2: Path) -> None:
    FakeV4L2.pictures = [b"\xff\xd8garbage"]
    source, sink = camera(v4l2), Frames()
    source.start(sink, MediaClock())
    try:
        deadline = time.monotonic() + 5
        while source.status().state is not SourceState.ERROR and time.monotonic() < deadline:
            time.sleep(0.05)
        status = source.status()
    finally:
        source.stop()
    assert status.state is SourceState.ERROR
    assert status.extra["bad_pictures"] >= MAX_FAILED_READS
    assert sink.frames and all(f.placeholder for f in sink.frames)  # pupils see the card


def test_jpeg_bytes_never_decodable_fall_back_to_opencv(v4l2: Path) -> None:
    """A backend that hands something else than the JPEG once asked for raw bytes: the camera
    opens the device again with OpenCV decoding, and pupils get pictures."""
    FakeV4L2.raw_bytes = b"\xff\xd8garbage"
    source, sink = camera(v4l2), Frames()
    source.start(sink, MediaClock())
    try:
        frames = sink.wait(3, timeout=8.0)
        status = source.status()
    finally:
        source.stop()
    assert status.state is SourceState.OK and status.extra["decoder"] == "opencv"
    assert len(FakeV4L2.instances) == 2 and FakeV4L2.instances[-1].convert_rgb
    want = reference_i420(FakeV4L2.pictures[0], 320, 240)
    assert max(planes_error(frames[-1].data, want, 240)) < 1.0
