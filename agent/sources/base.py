"""What every source is: a device thread that pushes raw media into a sink.

A source knows nothing of encoders or viewers. ``start(sink)`` starts exactly one thread that
owns the device; the thread calls ``sink`` with each new raw frame (video) or block (audio).
Sinks are thread-safe and never block (the encoder keeps only the newest picture), so a slow
encoder can never make a camera queue stale frames. ``stop()`` ends the thread and releases the
device; it blocks until then, so call it through ``asyncio.to_thread``.

A configured device that is missing or fails does not stop the source: the thread keeps
delivering a placeholder ("camera unavailable") or silence at the nominal rate, reports
``missing`` or ``error``, and tries to open the device again every ``retry_interval`` seconds
(a camera whose device node or file has gone is also watched for its return every
:data:`PRESENCE_POLL_S`, so a replugged camera is back within a fraction of a second).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..clock import MediaClock

DEFAULT_RETRY_INTERVAL = 1.0
"""Seconds between attempts to open a missing or failed device (docs/recovery.md)."""
PRESENCE_POLL_S = 0.2
"""How often a camera that has gone checks whether its device node or file is back."""


class SourceState(enum.StrEnum):
    OK = "ok"
    MISSING = "missing"
    ERROR = "error"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class RawVideoFrame:
    """One picture in I420 (planar 4:2:0): Y rows, then U rows, then V rows.

    ``data`` has shape ``(height * 3 // 2, width)`` and dtype uint8, the layout
    ``av.VideoFrame.from_ndarray(data, format="yuv420p")`` takes without a copy of the logic.
    """

    data: np.ndarray
    width: int
    height: int
    capture_time: float
    """``MediaClock.now()`` when the picture was captured."""
    placeholder: bool = False


@dataclass(frozen=True, slots=True)
class RawAudioBlock:
    """20 ms of mono 48 kHz signed 16-bit audio: ``samples`` has shape (960,) and dtype int16."""

    samples: np.ndarray
    capture_time: float
    """``MediaClock.now()`` of the block's first sample."""
    silent_placeholder: bool = False


VideoSink = Callable[[RawVideoFrame], None]
AudioSink = Callable[[RawAudioBlock], None]

AUDIO_SAMPLE_RATE = 48_000
AUDIO_BLOCK_SAMPLES = 960


@dataclass(slots=True)
class SourceStatus:
    """What ``GET /api/status`` shows for one source."""

    id: str
    kind: str
    device: str
    state: SourceState = SourceState.STOPPED
    detail: str = ""
    """A short plain reason for missing/error; never a traceback."""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "device": self.device,
            "state": str(self.state),
            "detail": self.detail,
            **self.extra,
        }


class Source(abc.ABC):
    """Common surface of video and audio sources."""

    id: str
    kind: str

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the thread and release the device. Blocking; idempotent."""

    @abc.abstractmethod
    def status(self) -> SourceStatus:
        """A snapshot, safe to call from any thread."""


class VideoSource(Source):
    kind = "video"
    width: int
    height: int
    fps: int

    @abc.abstractmethod
    def start(self, sink: VideoSink, clock: MediaClock) -> None:
        """Start the device thread; it calls ``sink`` with every new picture."""


class AudioSource(Source):
    kind = "audio"

    @abc.abstractmethod
    def start(self, sink: AudioSink, clock: MediaClock) -> None:
        """Start the device thread; it calls ``sink`` with every 20 ms block."""

    @abc.abstractmethod
    def level_dbfs(self) -> float | None:
        """RMS level of the most recent block in dBFS, or None before the first block."""
