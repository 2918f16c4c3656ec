"""Synthetic sources for the demo, the tests and the benchmark.

* ``SyntheticCamera``: a room test card (default 1280×720 at 30 fps) with motion everywhere —
  a scrolling textured background, a moving box and fresh sensor-like grain each frame — so the
  encoder works about as hard as on a real classroom camera, not on a flat colour.
* ``SyntheticDocument``: a page of text (default 1920×1080 at 15 fps) that drifts slightly like a
  sheet under a document camera, with grain; small type shows whether text stays legible.
* ``SyntheticMicrophone``: a 440 Hz tone at −20 dBFS with a short 1 kHz beep every second.

Both cards carry the clock code (``clockcode.py``) drawn with the capture wall-clock time, so any
receiver can measure glass-to-glass delay. Everything costly (textures, text, grain) is rendered
once at start; a frame is a few array copies (≈1–2 ms at 720p, ≈3 ms at 1080p on the kit).
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable

import cv2
import numpy as np

from ..clock import MediaClock
from .base import (
    AUDIO_BLOCK_SAMPLES,
    AUDIO_SAMPLE_RATE,
    AudioSink,
    AudioSource,
    RawAudioBlock,
    RawVideoFrame,
    SourceState,
    SourceStatus,
    VideoSink,
    VideoSource,
)
from .clockcode import BLOCK as CODE_ROWS
from .clockcode import WIDTH as CODE_COLUMNS
from .clockcode import draw_clock_code

log = logging.getLogger("agent.sources")

GRAIN_FRAMES = 8
GRAIN_AMPLITUDE = 12


class _Pacer:
    """Runs ``tick`` every ``period`` seconds on one thread until stopped; never drifts."""

    def __init__(self, name: str, period: float, tick: Callable[[], None]) -> None:
        self._name = name
        self._period = period
        self._tick = tick
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._times: deque[float] = deque(maxlen=64)
        self.count = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # a background loop logs what it doesn't expect and goes on
                log.exception("%s: unexpected error", self._name)
            self.count += 1
            self._times.append(time.monotonic())
            next_at += self._period
            late = time.monotonic() - next_at
            if late > self._period:  # fell behind (machine busy): skip, never burst
                next_at += late // self._period * self._period
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def rate(self) -> float:
        times = list(self._times)
        if len(times) < 2 or time.monotonic() - times[-1] > 2 * self._period + 1:
            return 0.0
        return round((len(times) - 1) / (times[-1] - times[0]), 1)


class _SyntheticVideo(VideoSource):
    """Shared machinery: a pre-rendered texture panned across the frame, grain, clock code."""

    def __init__(self, source_id: str, width: int, height: int, fps: int) -> None:
        self.id = source_id
        self.width = width
        self.height = height
        self.fps = fps
        rng = np.random.default_rng(zlib.crc32(source_id.encode()))
        self._texture = self._render_texture(rng)
        self._grain = rng.integers(0, GRAIN_AMPLITUDE, (GRAIN_FRAMES, height, width), np.uint8)
        self._chroma = self._render_chroma()
        self._pacer: _Pacer | None = None
        self._lock = threading.Lock()

    def _render_texture(self, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def _render_chroma(self) -> np.ndarray:
        """U and V planes packed as in I420; neutral grey by default."""
        return self._pack_chroma(
            np.full((self.height // 2, self.width // 2), 128, np.uint8),
            np.full((self.height // 2, self.width // 2), 128, np.uint8),
        )

    def _pack_chroma(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Pack (h/2, w/2) planes into I420's rows, neutral under the clock code."""
        for plane in (u, v):
            plane[: CODE_ROWS // 2, : CODE_COLUMNS // 2] = 128
        return np.concatenate((u.ravel(), v.ravel())).reshape(self.height // 2, self.width)

    def _offset(self, n: int) -> tuple[int, int]:
        raise NotImplementedError

    def _overlay(self, luma: np.ndarray, n: int) -> None:
        """Per-frame drawing on top of the texture (moving objects)."""

    def render(self, n: int, wall_ms: int) -> np.ndarray:
        """Frame ``n`` as I420, stamped with ``wall_ms``. Pure: tests call it directly."""
        frame = np.empty((self.height * 3 // 2, self.width), np.uint8)
        luma = frame[: self.height]
        dy, dx = self._offset(n)
        np.add(
            self._texture[dy : dy + self.height, dx : dx + self.width],
            self._grain[n % GRAIN_FRAMES],
            out=luma,
        )
        self._overlay(luma, n)
        draw_clock_code(luma, wall_ms)
        frame[self.height :] = self._chroma
        return frame

    def start(self, sink: VideoSink, clock: MediaClock) -> None:
        def tick() -> None:
            assert self._pacer is not None
            capture_time = clock.now()
            data = self.render(self._pacer.count, clock.wall_ms())
            sink(RawVideoFrame(data, self.width, self.height, capture_time))

        with self._lock:
            if self._pacer is not None:
                return
            self._pacer = _Pacer(f"source-{self.id}", 1.0 / self.fps, tick)
            self._pacer.start()

    def stop(self) -> None:
        with self._lock:
            pacer, self._pacer = self._pacer, None
        if pacer is not None:
            pacer.stop()

    def status(self) -> SourceStatus:
        pacer = self._pacer
        running = pacer is not None
        return SourceStatus(
            id=self.id,
            kind=self.kind,
            device="synthetic",
            state=SourceState.OK if running else SourceState.STOPPED,
            extra={
                "width": self.width,
                "height": self.height,
                "fps": pacer.rate() if pacer else 0.0,
                "frames": pacer.count if pacer else 0,
                "placeholder": False,
            },
        )


class SyntheticCamera(_SyntheticVideo):
    """The room test card: colour-bar texture scrolling sideways, a bouncing box, grain."""

    SCROLL_PX = 4

    def __init__(
        self, source_id: str = "camera", width: int = 1280, height: int = 720, fps: int = 30
    ) -> None:
        super().__init__(source_id, width, height, fps)

    def _render_texture(self, rng: np.random.Generator) -> np.ndarray:
        w, h = self.width * 2, self.height
        bars = np.array([180, 160, 140, 120, 100, 80, 60, 40], np.uint8)
        texture = np.repeat(bars, -(-w // len(bars)))[:w][np.newaxis, :].repeat(h, axis=0)
        blobs = cv2.GaussianBlur(rng.integers(0, 60, (h, w), np.uint8), (0, 0), 3)
        texture = np.asarray(cv2.add(texture, blobs), np.uint8)
        for k in range(0, w, 160):  # labelled ticks so scrolling is visible
            cv2.putText(
                texture, str(k // 160), (k + 20, h - 40), cv2.FONT_HERSHEY_SIMPLEX, 2, 220, 3
            )
        return np.minimum(texture, 235 - GRAIN_AMPLITUDE).astype(np.uint8)

    def _render_chroma(self) -> np.ndarray:
        ramp = np.linspace(100, 160, self.width // 2, dtype=np.uint8)[np.newaxis, :]
        rows = self.height // 2
        return self._pack_chroma(ramp.repeat(rows, axis=0), ramp[:, ::-1].repeat(rows, axis=0))

    def _offset(self, n: int) -> tuple[int, int]:
        return 0, (n * self.SCROLL_PX) % self.width

    def _overlay(self, luma: np.ndarray, n: int) -> None:
        size = self.height // 6
        span_x, span_y = self.width - size, self.height - size - 40
        x = abs((n * 9) % (2 * span_x) - span_x)
        y = 40 + abs((n * 5) % (2 * span_y) - span_y)
        luma[y : y + size, x : x + size] = 225


class SyntheticDocument(_SyntheticVideo):
    """The document test card: a printed page with several type sizes, drifting gently."""

    MARGIN = 16
    LINES = (
        "Le petit prince - chapitre II",
        "J'ai ainsi vecu seul, sans personne avec qui parler veritablement,",
        "jusqu'a une panne dans le desert du Sahara, il y a six ans.",
        "Quelque chose s'etait casse dans mon moteur.",
        "Exercice 3 : calculer 127 x 48 = 6096 ; 3/4 + 5/8 = 11/8",
        "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789",
    )

    def __init__(
        self, source_id: str = "document", width: int = 1920, height: int = 1080, fps: int = 15
    ) -> None:
        super().__init__(source_id, width, height, fps)

    def _render_texture(self, rng: np.random.Generator) -> np.ndarray:
        m = self.MARGIN
        h, w = self.height + 2 * m, self.width + 2 * m
        page = np.full((h, w), 215, np.uint8)
        y = 110
        scale_base = self.width / 1920
        for i, line in enumerate(self.LINES * 4):
            scale = scale_base * (1.4 if i == 0 else (0.6, 0.8, 1.0)[i % 3])
            thickness = 3 if i == 0 else 2 if scale > 0.7 * scale_base else 1
            cv2.putText(
                page, line, (80, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 30, thickness, cv2.LINE_AA
            )
            y += int(44 * scale / scale_base) + 10
            if y > h - 40:
                break
        paper = cv2.GaussianBlur(rng.integers(0, 10, (h, w), np.uint8), (0, 0), 2)
        return np.minimum(cv2.add(page, paper), 235 - GRAIN_AMPLITUDE).astype(np.uint8)

    def _offset(self, n: int) -> tuple[int, int]:
        m = self.MARGIN
        phase = n / max(1, self.fps)
        return (m + round(m * 0.5 * np.sin(phase * 0.7)), m + round(m * 0.8 * np.sin(phase)))


class SyntheticMicrophone(AudioSource):
    """A 440 Hz tone at −20 dBFS with a 100 ms 1 kHz beep at the start of every second."""

    id = "microphone"
    TONE_HZ = 440.0
    BEEP_HZ = 1000.0
    AMPLITUDE = 0.1 * 32767

    def __init__(self) -> None:
        self._pacer: _Pacer | None = None
        self._lock = threading.Lock()
        self._sample = 0
        self._level: float | None = None
        # One second holds whole periods of both tones: render it once, then slice it.
        t = np.arange(AUDIO_SAMPLE_RATE) / AUDIO_SAMPLE_RATE
        freq = np.where(t < 0.1, self.BEEP_HZ, self.TONE_HZ)
        self._second = (self.AMPLITUDE * np.sin(2 * np.pi * freq * t)).astype(np.int16)

    def block(self, first_sample: int) -> np.ndarray:
        start = first_sample % AUDIO_SAMPLE_RATE
        return self._second[start : start + AUDIO_BLOCK_SAMPLES]

    def start(self, sink: AudioSink, clock: MediaClock) -> None:
        def tick() -> None:
            samples = self.block(self._sample)
            self._sample += AUDIO_BLOCK_SAMPLES
            self._level = rms_dbfs(samples)
            sink(RawAudioBlock(samples, clock.now()))

        with self._lock:
            if self._pacer is None:
                self._pacer = _Pacer(
                    "source-microphone", AUDIO_BLOCK_SAMPLES / AUDIO_SAMPLE_RATE, tick
                )
                self._pacer.start()

    def stop(self) -> None:
        with self._lock:
            pacer, self._pacer = self._pacer, None
        if pacer is not None:
            pacer.stop()

    def level_dbfs(self) -> float | None:
        return self._level

    def status(self) -> SourceStatus:
        running = self._pacer is not None
        return SourceStatus(
            id=self.id,
            kind=self.kind,
            device="synthetic",
            state=SourceState.OK if running else SourceState.STOPPED,
        )


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS, floored at −100."""
    if samples.size == 0:
        return -100.0
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float32)))))
    return max(-100.0, round(20 * float(np.log10(max(rms, 1e-9) / 32768)), 1))
