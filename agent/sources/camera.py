"""Cameras through OpenCV: V4L2 devices (MJPEG), RTSP/HTTP streams and looped video files.

One thread owns the ``cv2.VideoCapture``. An MJPEG camera (a UVC device asked for MJPG, or
an MJPEG file or stream) hands its JPEG bytes untouched (V4L2: ``CAP_PROP_CONVERT_RGB`` off;
FFmpeg: ``CAP_PROP_FORMAT`` -1, its packets), which libjpeg-turbo decodes straight to I420
(agent/sources/mjpeg.py: ~40 % less CPU than OpenCV's decode + conversion); a JPEG that does
not decode is left out and counted (``bad_pictures``). Any other picture is decoded by OpenCV
to BGR, resized (only when the device gives another size than configured) and converted
BGR→I420 with one ``cv2.cvtColor``; so is an MJPEG one when PyTurboJPEG or libturbojpeg0 is
missing, or when libjpeg-turbo could decode none of the device's first ten pictures (it is
then opened again that way). Either way the I420 picture is handed to the sink. A picture
the device delivers faster than the configured rate is dropped before any decoding or
conversion, so a 30 fps camera configured at 15 fps costs half the CPU. The thread's own CPU
time (read, decode, convert) is in ``status()`` as ``cpu_s``.

Per-picture cost, measured on the dev VM (2-core AMD EPYC, OpenCV 5.0, one OpenCV thread):

* ``cvtColor(BGR→I420)``: 0.6 ms at 720p, 1.4 ms at 1080p (0.3 / 0.9 ms on OpenCV's default
  two threads). PyAV's ``reformat`` bgr24→yuv420p takes 1.5 / 4.8 ms; ``CAP_PROP_CONVERT_RGB``
  off is no shortcut: the FFmpeg backend then hands back the Y plane alone (8UC1).
* The real cost on a UVC camera is the MJPEG decode. OpenCV's (to BGR, then ``cvtColor``)
  measured 3.2 ms at 720p and 6.9 ms at 1080p for realistic 60 / 140 KB pictures;
  libjpeg-turbo straight to I420 1.8 / 4.2 ms (agent/sources/mjpeg.py). The raw V4L2
  path (``CAP_PROP_CONVERT_RGB`` off) cannot be run without a camera here: it is the same
  decoder on the same bytes, unit-tested with a stand-in capture.
* ``resize(INTER_AREA)`` is cheap for integer ratios (2× down to 720p: 0.7 ms) but expensive
  for fractional ones (1.5× down: 12 ms to 720p, 30 ms to 1080p): configure a size the camera
  really gives.

A device that is missing or stops delivering is released; the thread then sends a "camera
unavailable" card at the nominal rate (status ``missing`` or ``error``) and tries to open the
device again every ``retry_interval`` seconds (1 s by default), or as soon as its device node or
file is there again (checked every 0.2 s). The sink stays the same throughout, so pupils
never reconnect. A video file is played in a loop, paced at the configured rate, and reopened
at each end so that a file that has gone is noticed.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections import deque

import cv2
import numpy as np

from ..clock import MediaClock
from ..config import VideoSourceConfig
from . import mjpeg
from .base import (
    DEFAULT_RETRY_INTERVAL,
    PRESENCE_POLL_S,
    RawVideoFrame,
    SourceState,
    SourceStatus,
    VideoSink,
    VideoSource,
)
from .placeholder import placeholder_i420

log = logging.getLogger("agent.sources")

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
MAX_FAILED_READS = 10
"""Consecutive failed reads after which a live device is considered gone."""
FAILED_READ_PAUSE = 0.05
RATE_WINDOW = 2.0
"""Seconds over which ``status()`` measures the delivered frame rate."""
NETWORK_OPEN_TIMEOUT_MS = 5000
NETWORK_READ_TIMEOUT_MS = 3000
STOP_WARN_AFTER = 5.0

NOT_FOUND = "device not found"
NOT_DELIVERING = "device stopped delivering pictures"
CANNOT_OPEN = "device cannot be opened"
UNEXPECTED = "camera error"
MJPG = cv2.VideoWriter.fourcc(*"MJPG")


class DeviceKind(enum.Enum):
    V4L2 = "v4l2"
    NETWORK = "network"
    FILE = "file"


def device_kind(device: str) -> DeviceKind:
    """``0`` or ``/dev/...`` (``/dev/video2``, ``/dev/v4l/by-id/...``): V4L2; URL: network."""
    if device.isdigit() or device.startswith("/dev/"):
        return DeviceKind.V4L2
    if device.lower().startswith(NETWORK_SCHEMES):
        return DeviceKind.NETWORK
    return DeviceKind.FILE


def device_path(device: str) -> str | None:
    """The filesystem path whose presence tells whether the device is there (None: a URL)."""
    kind = device_kind(device)
    if kind is DeviceKind.NETWORK:
        return None
    return f"/dev/video{device}" if device.isdigit() else device


class _Ticker:
    """A fixed-rate schedule waited on with the stop event; after a stall it restarts rather
    than bursting."""

    def __init__(self, period: float, stop: threading.Event) -> None:
        self.period = period
        self._stop = stop
        self._next = time.monotonic()

    def wait(self) -> bool:
        """Wait for the next tick; False if stop was requested."""
        self._next += self.period
        now = time.monotonic()
        if now - self._next > self.period:
            self._next = now
        return not self._stop.wait(max(0.0, self._next - now))


def to_i420(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """One picture as I420 of the given size: resize only if needed, then one conversion."""
    if bgr.ndim == 2:
        bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
    if bgr.shape[1] != width or bgr.shape[0] != height:
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    code = cv2.COLOR_BGRA2YUV_I420 if bgr.shape[2] == 4 else cv2.COLOR_BGR2YUV_I420
    return cv2.cvtColor(bgr, code)


def join_thread(thread: threading.Thread, name: str) -> None:
    """Wait for a device thread however long it takes (it releases the device on its way out),
    with a warning if a driver keeps it blocked."""
    if thread is threading.current_thread():
        return
    thread.join(STOP_WARN_AFTER)
    while thread.is_alive():
        log.warning("%s: still waiting for the device to let go", name)
        thread.join(STOP_WARN_AFTER)


class OpenCVCamera(VideoSource):
    def __init__(
        self,
        source_id: str,
        cfg: VideoSourceConfig,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
    ) -> None:
        self.id = source_id
        self.device = cfg.device
        self.width, self.height, self.fps = cfg.width, cfg.height, cfg.fps
        self._kind = device_kind(cfg.device)
        self._path = device_path(cfg.device)
        self._retry_interval = retry_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state = SourceState.STOPPED
        self._detail = ""
        self._placeholder = False
        self._frames = 0
        self._times: deque[float] = deque()
        self._cpu_s = 0.0
        self._decoder: mjpeg.MjpegDecoder | None = None
        """Set while the open device hands JPEG bytes (libjpeg-turbo decodes them)."""
        self._bad_pictures = 0
        self._raw_refused = False
        """The device's JPEG bytes could not be decoded at all: OpenCV decodes from then on."""

    # -- public surface ------------------------------------------------------------------------

    def start(self, sink: VideoSink, clock: MediaClock) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(sink, clock), name=f"source-{self.id}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            join_thread(thread, self.id)
        self._set_state(SourceState.STOPPED, "")

    def status(self) -> SourceStatus:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._times if now - t <= RATE_WINDOW]
            fps = 0.0
            if len(recent) >= 2:
                fps = round((len(recent) - 1) / max(now - recent[0], 1e-6), 1)
            return SourceStatus(
                id=self.id,
                kind=self.kind,
                device=self.device,
                state=self._state,
                detail=self._detail,
                extra={
                    "fps": fps,
                    "frames": self._frames,
                    "width": self.width,
                    "height": self.height,
                    "placeholder": self._placeholder,
                    "decoder": "libjpeg-turbo" if self._decoder is not None else "opencv",
                    "bad_pictures": self._bad_pictures,
                    "cpu_s": round(self._cpu_s, 3),
                },
            )

    # -- the device thread ---------------------------------------------------------------------

    def _run(self, sink: VideoSink, clock: MediaClock) -> None:
        ticker = _Ticker(1.0 / self.fps, self._stop)
        while not self._stop.is_set():
            reopen_now = False
            try:
                reopen_now = self._session(sink, clock, ticker)
            except Exception:  # the device thread never dies: log, report, keep going
                log.exception("%s: unexpected error", self.id)
                self._set_state(SourceState.ERROR, UNEXPECTED)
            if reopen_now or self._stop.is_set():
                continue
            try:
                self._send_placeholders(sink, clock, ticker)
            except Exception:
                log.exception("%s: unexpected error while sending the placeholder", self.id)
                self._stop.wait(self._retry_interval)
        self._set_state(SourceState.STOPPED, "")

    def _session(self, sink: VideoSink, clock: MediaClock, ticker: _Ticker) -> bool:
        """Open the device and deliver its pictures until it fails or stop is requested.

        True means "open it again right away": a video file reached its end."""
        capture = self._open()
        if capture is None:
            return False
        try:
            return self._read_pictures(capture, sink, clock, ticker)
        except cv2.error as exc:
            log.warning("%s: capture failed: %s", self.id, str(exc).strip())
            self._set_failed()
        except Exception:
            log.exception("%s: capture failed", self.id)
            self._set_failed()
        finally:
            self._release(capture)
        return False

    def _open(self) -> cv2.VideoCapture | None:
        self._decoder = None
        if self._path is not None and not os.path.exists(self._path):
            self._set_state(SourceState.MISSING, NOT_FOUND)
            return None
        try:
            capture = self._create_capture()
        except cv2.error as exc:
            log.info("%s: cannot open %s: %s", self.id, self.device, str(exc).strip())
            capture = None
        if capture is None or not capture.isOpened():
            if capture is not None:
                self._release(capture)
            if self._path is not None and os.path.exists(self._path):
                # there but unusable: a UVC metadata node, no permission, not a video file
                self._set_state(SourceState.ERROR, CANNOT_OPEN)
            else:
                self._set_state(SourceState.MISSING, NOT_FOUND)
            return None
        self._decoder = self._raw_jpeg(capture)
        decoder = "libjpeg-turbo" if self._decoder is not None else "OpenCV"
        log.debug("%s: opened %s (pictures decoded by %s)", self.id, self.device, decoder)
        return capture

    def _create_capture(self) -> cv2.VideoCapture:
        if self._kind is DeviceKind.NETWORK:
            params: list[int] = []
            for name, value in (
                ("CAP_PROP_OPEN_TIMEOUT_MSEC", NETWORK_OPEN_TIMEOUT_MS),
                ("CAP_PROP_READ_TIMEOUT_MSEC", NETWORK_READ_TIMEOUT_MS),
            ):
                if hasattr(cv2, name):
                    params += [getattr(cv2, name), value]
            return cv2.VideoCapture(self.device, cv2.CAP_FFMPEG, params)
        if self._kind is DeviceKind.FILE:
            return cv2.VideoCapture(self.device, cv2.CAP_FFMPEG)
        target: int | str = int(self.device) if self.device.isdigit() else self.device
        capture = cv2.VideoCapture(target, cv2.CAP_V4L2)
        if capture.isOpened():  # UVC cameras give 720p30 / 1080p30 only in MJPEG
            capture.set(cv2.CAP_PROP_FOURCC, MJPG)
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            capture.set(cv2.CAP_PROP_FPS, self.fps)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return capture

    def _raw_jpeg(self, capture: cv2.VideoCapture) -> mjpeg.MjpegDecoder | None:
        """Ask an MJPEG device for its JPEG bytes; a decoder for them, or None (OpenCV
        decodes: not MJPEG, no libjpeg-turbo, or the backend refused)."""
        if self._raw_refused or int(capture.get(cv2.CAP_PROP_FOURCC)) != MJPG:
            return None
        turbo = mjpeg.turbojpeg()
        if turbo is None:
            return None
        if self._kind is DeviceKind.V4L2:
            raw = capture.set(cv2.CAP_PROP_CONVERT_RGB, 0)
        else:  # FFmpeg's "raw stream" mode: read() gives each packet, here one JPEG
            raw = capture.set(cv2.CAP_PROP_FORMAT, -1)
        if not raw:
            log.info("%s: the capture backend keeps decoding MJPEG itself", self.id)
            return None
        return mjpeg.MjpegDecoder(turbo, self.width, self.height)

    def _read_pictures(
        self, capture: cv2.VideoCapture, sink: VideoSink, clock: MediaClock, ticker: _Ticker
    ) -> bool:
        is_file = self._kind is DeviceKind.FILE
        min_gap = 0.75 / self.fps
        last_at = -1.0
        failures = delivered = bad = 0
        while not self._stop.is_set():
            ok, picture = capture.read()
            if ok and picture is not None and picture.size:
                failures = 0
                now = time.monotonic()
                if not is_file and now - last_at < min_gap:
                    continue  # the device is faster than configured: drop before decoding
                last_at, capture_time = now, clock.now()
                i420 = self._decoded(picture)
                if i420 is None:
                    bad += 1
                    if bad >= MAX_FAILED_READS:
                        return self._undecodable(delivered)
                    continue
                bad = 0
                self._deliver(i420, capture_time, sink)
                delivered += 1
                if is_file and not ticker.wait():
                    break
                continue
            if is_file and delivered:
                return True  # end of the file: open it again (it may have gone) and loop
            failures += 1
            if is_file or failures >= MAX_FAILED_READS:
                self._set_failed()
                return False
            self._stop.wait(FAILED_READ_PAUSE)
        return False

    def _undecodable(self, delivered: int) -> bool:
        """Ten pictures in a row could not be decoded. If libjpeg-turbo never decoded one from
        this device, open it again with OpenCV decoding (True); else the device is broken."""
        if self._decoder is not None and not delivered:
            log.warning("%s: libjpeg-turbo cannot decode its pictures: OpenCV will", self.id)
            self._raw_refused = True
            return True
        self._set_failed()
        return False

    def _decoded(self, picture: np.ndarray) -> np.ndarray | None:
        """The device's picture as I420 of the configured size (None: not decodable)."""
        if self._decoder is None:
            return to_i420(picture, self.width, self.height)
        try:
            return self._decoder.decode(picture)
        except mjpeg.MjpegDecodeError as exc:
            with self._lock:
                self._bad_pictures += 1
                first = self._bad_pictures == 1
            (log.warning if first else log.debug)("%s: picture left out: %s", self.id, exc)
            return None

    def _send_placeholders(self, sink: VideoSink, clock: MediaClock, ticker: _Ticker) -> None:
        """The card at the nominal rate until the next attempt: after ``retry_interval``, or
        as soon as a device node or file that was missing is there again (replugged)."""
        picture = placeholder_i420(self.width, self.height)
        now = time.monotonic()
        end, poll_at = now + self._retry_interval, now + PRESENCE_POLL_S
        watch = self._path if self._path is not None and not os.path.exists(self._path) else None
        while now < end:
            self._deliver(picture, clock.now(), sink, placeholder=True)
            if not ticker.wait():
                return
            now = time.monotonic()
            if watch is not None and now >= poll_at:
                poll_at = now + PRESENCE_POLL_S
                if os.path.exists(watch):
                    log.info("%s: %s is back", self.id, watch)
                    return

    def _deliver(
        self, data: np.ndarray, capture_time: float, sink: VideoSink, placeholder: bool = False
    ) -> None:
        now = time.monotonic()
        cpu = time.thread_time()  # the device thread's own CPU since it started
        with self._lock:
            self._cpu_s = cpu
            self._frames += 1
            self._placeholder = placeholder
            self._times.append(now)
            while now - self._times[0] > RATE_WINDOW:
                self._times.popleft()
        if not placeholder:
            self._set_state(SourceState.OK, "")
        sink(RawVideoFrame(data, self.width, self.height, capture_time, placeholder))

    def _set_failed(self) -> None:
        if self._path is not None and not os.path.exists(self._path):
            self._set_state(SourceState.MISSING, NOT_FOUND)
        else:
            self._set_state(SourceState.ERROR, NOT_DELIVERING)

    def _release(self, capture: cv2.VideoCapture) -> None:
        try:
            capture.release()
        except Exception:  # a vanished device may fail to close; it is gone either way
            log.warning("%s: releasing the device failed", self.id, exc_info=True)

    def _set_state(self, state: SourceState, detail: str) -> None:
        with self._lock:
            changed = state != self._state or detail != self._detail
            self._state, self._detail = state, detail
        if changed:
            log.info("%s: %s%s", self.id, state, f" ({detail})" if detail else "")
