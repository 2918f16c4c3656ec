"""Cameras through OpenCV: V4L2 devices (MJPEG), RTSP/HTTP streams and video files.

One thread owns the ``cv2.VideoCapture``. It delivers I420 pictures of the configured size: a
resize (only when the device gives another size) and one ``cv2.cvtColor(BGR→I420)``, the
cheapest path measured here (≈ 1.3 ms per 720p picture, ≈ 3 ms per 1080p picture; letting
FFmpeg convert through ``CAP_PROP_CONVERT_RGB`` off still needs a BGR→I420 step for MJPEG).

A device that is missing or stops delivering is released; the thread then sends a "camera
unavailable" card at the nominal rate (status ``missing`` or ``error``) and tries to open the
device again every ``retry_interval`` seconds. Pupils keep their connection throughout.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque

import cv2
import numpy as np

from ..clock import MediaClock
from ..config import VideoSourceConfig
from .base import RawVideoFrame, SourceState, SourceStatus, VideoSink, VideoSource
from .placeholder import placeholder_i420
from .presence import NETWORK_SCHEMES

log = logging.getLogger("agent.sources")

MAX_FAILED_READS = 10
"""Consecutive failed reads after which a device is considered gone."""


class OpenCVCamera(VideoSource):
    def __init__(self, source_id: str, cfg: VideoSourceConfig, retry_interval: float = 3.0) -> None:
        self.id = source_id
        self.device = cfg.device
        self.width, self.height, self.fps = cfg.width, cfg.height, cfg.fps
        self._retry_interval = retry_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = SourceState.STOPPED
        self._detail = ""
        self._placeholder = False
        self._times: deque[float] = deque(maxlen=64)
        self._frames = 0

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
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self._state = SourceState.STOPPED

    def status(self) -> SourceStatus:
        times = list(self._times)
        fps = 0.0
        if len(times) >= 2 and time.monotonic() - times[-1] < 2.0:
            fps = round((len(times) - 1) / (times[-1] - times[0]), 1)
        return SourceStatus(
            id=self.id,
            kind=self.kind,
            device=self.device,
            state=self._state,
            detail=self._detail,
            extra={
                "width": self.width,
                "height": self.height,
                "fps": fps,
                "frames": self._frames,
                "placeholder": self._placeholder,
            },
        )

    # -- the device thread ---------------------------------------------------------------------

    def _run(self, sink: VideoSink, clock: MediaClock) -> None:
        while not self._stop.is_set():
            capture = self._open()
            if capture is None:
                self._send_placeholders(sink, clock, self._retry_interval)
                continue
            try:
                self._capture_loop(capture, sink, clock)
            except Exception:  # a background loop logs what it doesn't expect and goes on
                log.exception("%s: capture failed", self.id)
                self._set_state(SourceState.ERROR, "camera error")
            finally:
                capture.release()
            if not self._stop.is_set() and self._state != SourceState.OK:
                self._send_placeholders(sink, clock, self._retry_interval)

    def _open(self) -> cv2.VideoCapture | None:
        device = self.device
        is_file = not device.isdigit() and not device.startswith(("/dev/", *NETWORK_SCHEMES))
        if (device.startswith("/dev/") or is_file) and not os.path.exists(device):
            self._set_state(SourceState.MISSING, "device not found")
            return None
        try:
            capture = self._create_capture(device)
        except cv2.error as exc:
            log.info("%s: cannot open %s: %s", self.id, device, exc)
            capture = None
        if capture is None or not capture.isOpened():
            if capture is not None:
                capture.release()
            self._set_state(SourceState.MISSING, "device not found or busy")
            return None
        log.info("%s: opened %s", self.id, device)
        self._set_state(SourceState.OK, "")
        return capture

    def _create_capture(self, device: str) -> cv2.VideoCapture:
        if device.startswith(NETWORK_SCHEMES):
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000]
            return cv2.VideoCapture(device, cv2.CAP_FFMPEG, params)
        if device.isdigit() or device.startswith("/dev/"):
            index_or_path: int | str = int(device) if device.isdigit() else device
            capture = cv2.VideoCapture(index_or_path, cv2.CAP_V4L2)
            if capture.isOpened():  # ask for MJPEG: UVC cameras give 720p30/1080p30 only so
                capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"MJPG"))
                capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
                capture.set(cv2.CAP_PROP_FPS, self.fps)
                capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            return capture
        return cv2.VideoCapture(device, cv2.CAP_FFMPEG)

    def _capture_loop(self, capture: cv2.VideoCapture, sink: VideoSink, clock: MediaClock) -> None:
        is_file = not self.device.isdigit() and not self.device.startswith(
            ("/dev/", *NETWORK_SCHEMES)
        )
        period = 1.0 / self.fps
        next_at = time.monotonic()
        failures = 0
        while not self._stop.is_set():
            ok, bgr = capture.read()
            if not ok or bgr is None:
                if is_file and failures == 0:
                    return  # end of the file: reopen it (it may have gone) and play it again
                failures += 1
                if failures >= MAX_FAILED_READS:
                    gone = self.device.startswith("/dev/") and not os.path.exists(self.device)
                    self._set_state(
                        SourceState.MISSING if gone else SourceState.ERROR,
                        "device unplugged" if gone else "camera stopped sending",
                    )
                    return
                self._stop.wait(0.05)
                continue
            failures = 0
            self._deliver(self._to_i420(bgr), sink, clock, placeholder=False)
            if is_file:  # a file reads faster than real time: pace it
                next_at += period
                self._stop.wait(max(0.0, next_at - time.monotonic()))
                if time.monotonic() - next_at > period:
                    next_at = time.monotonic()

    def _to_i420(self, bgr: np.ndarray) -> np.ndarray:
        if bgr.shape[1] != self.width or bgr.shape[0] != self.height:
            bgr = cv2.resize(bgr, (self.width, self.height), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)

    def _send_placeholders(self, sink: VideoSink, clock: MediaClock, seconds: float) -> None:
        picture = placeholder_i420(self.width, self.height)
        period = 1.0 / self.fps
        end = time.monotonic() + seconds
        next_at = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < end:
            self._deliver(picture, sink, clock, placeholder=True)
            next_at += period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _deliver(
        self, data: np.ndarray, sink: VideoSink, clock: MediaClock, placeholder: bool
    ) -> None:
        self._placeholder = placeholder
        self._frames += 1
        self._times.append(time.monotonic())
        sink(RawVideoFrame(data, self.width, self.height, clock.now(), placeholder))

    def _set_state(self, state: SourceState, detail: str) -> None:
        if state != self._state or detail != self._detail:
            log.info("%s: %s %s", self.id, state, detail)
        self._state, self._detail = state, detail
