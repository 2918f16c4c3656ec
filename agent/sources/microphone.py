"""The microphone through sounddevice (PortAudio): 48 kHz mono int16, 20 ms blocks, one thread.

The thread owns a ``sounddevice.InputStream`` and reads blocks with PortAudio's blocking
``read``. A missing or failing device is closed; the thread then sends silence every 20 ms
(status ``missing`` or ``error``) and tries to open it again every ``retry_interval`` seconds.

Opening, re-scanning and closing PortAudio streams is shared with the speaker
(``portaudio.py``): a USB microphone plugged in again is found by name, and no PortAudio
failure is a crash.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from ..clock import MediaClock
from ..config import MicrophoneConfig
from .base import (
    AUDIO_BLOCK_SAMPLES,
    DEFAULT_RETRY_INTERVAL,
    AudioSink,
    AudioSource,
    RawAudioBlock,
    SourceState,
    SourceStatus,
)
from .portaudio import (
    BLOCK_SECONDS,
    Schedule,
    close_stream,
    join_thread,
    keep_running,
    open_errors,
    open_stream,
)

log = logging.getLogger("agent.sources")

FULL_SCALE = 32768.0
SILENCE_DBFS = -100.0
MAX_SILENCE_LAG = 0.2
"""Silent blocks missed by up to this long (an attempt to open the device) are caught up."""

SILENCE = np.zeros(AUDIO_BLOCK_SAMPLES, np.int16)
SILENCE.setflags(write=False)

NOT_DELIVERING = "device stopped delivering sound"
UNEXPECTED = "microphone error"
_OPEN_ERRORS = open_errors("device cannot record 48 kHz mono")


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (full scale 32768), floored at −100."""
    if samples.size == 0:
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, round(20.0 * float(np.log10(rms / FULL_SCALE)), 1))


class SoundDeviceMicrophone(AudioSource):
    id = "microphone"

    def __init__(
        self, cfg: MicrophoneConfig, retry_interval: float = DEFAULT_RETRY_INTERVAL
    ) -> None:
        self.device = cfg.device
        self._retry_interval = retry_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state = SourceState.STOPPED
        self._detail = ""
        self._level: float | None = None
        self._placeholder = False
        self._blocks = 0
        self._overflows = 0

    # -- public surface ------------------------------------------------------------------------

    def start(self, sink: AudioSink, clock: MediaClock) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(sink, clock), name="source-microphone", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            join_thread(thread, "microphone")
        self._set_state(SourceState.STOPPED, "")

    def level_dbfs(self) -> float | None:
        with self._lock:
            return self._level

    def status(self) -> SourceStatus:
        with self._lock:
            return SourceStatus(
                id=self.id,
                kind=self.kind,
                device=self.device,
                state=self._state,
                detail=self._detail,
                extra={
                    "blocks": self._blocks,
                    "overflows": self._overflows,
                    "level_dbfs": self._level,
                    "placeholder": self._placeholder,
                },
            )

    # -- the device thread ---------------------------------------------------------------------

    def _run(self, sink: AudioSink, clock: MediaClock) -> None:
        schedule = Schedule(BLOCK_SECONDS, MAX_SILENCE_LAG, self._stop)
        keep_running(
            "microphone",
            self._stop,
            lambda: self._session(sink, clock),
            lambda: self._send_silence(sink, clock, schedule),
            self._set_state,
            UNEXPECTED,
            self._retry_interval,
        )

    def _session(self, sink: AudioSink, clock: MediaClock) -> None:
        """Open the device and deliver its blocks until it fails or stop is requested."""
        stream = self._open()
        if stream is None:
            return
        try:
            self._read_blocks(stream, sink, clock)
        except Exception as exc:  # PortAudioError when a USB microphone is unplugged
            log.warning("microphone: capture failed: %s", exc)
            self._set_state(SourceState.ERROR, NOT_DELIVERING)
        finally:
            close_stream(stream)

    def _open(self) -> Any:
        return open_stream("microphone", "InputStream", self.device, self._set_state, _OPEN_ERRORS)

    def _read_blocks(self, stream: Any, sink: AudioSink, clock: MediaClock) -> None:
        while not self._stop.is_set():
            data, overflowed = stream.read(AUDIO_BLOCK_SAMPLES)
            capture_time = clock.now() - BLOCK_SECONDS
            samples = np.ascontiguousarray(data[:, 0], dtype=np.int16)
            self._deliver(RawAudioBlock(samples, capture_time), sink, bool(overflowed))

    def _send_silence(self, sink: AudioSink, clock: MediaClock, schedule: Schedule) -> None:
        end = time.monotonic() + self._retry_interval
        while time.monotonic() < end:
            capture_time = clock.now() - schedule.take()
            self._deliver(RawAudioBlock(SILENCE, capture_time, silent_placeholder=True), sink)
            if not schedule.wait():
                return

    def _deliver(self, block: RawAudioBlock, sink: AudioSink, overflowed: bool = False) -> None:
        level = SILENCE_DBFS if block.silent_placeholder else rms_dbfs(block.samples)
        with self._lock:
            self._blocks += 1
            self._overflows += overflowed
            self._level = level
            self._placeholder = block.silent_placeholder
        if not block.silent_placeholder:
            self._set_state(SourceState.OK, "")
        sink(block)

    def _set_state(self, state: SourceState, detail: str) -> None:
        with self._lock:
            changed = state != self._state or detail != self._detail
            self._state, self._detail = state, detail
        if changed:
            log.info("microphone: %s%s", state, f" ({detail})" if detail else "")
