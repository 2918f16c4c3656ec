"""The classroom's speaker through sounddevice (PortAudio): 48 kHz mono int16, 20 ms blocks.

One thread owns a ``sounddevice.OutputStream`` opened with PortAudio's ``latency="low"`` and
writes to it with blocking ``write`` calls: the device's clock paces the thread. Every 20 ms the
thread takes the next block from ``tick`` (the talk-back mix, ``agent/media/talkback.py``; None:
nobody speaks, silence is written), writes it and hands it to ``played`` with its play time
(the echo canceller's render, ``talkback.RenderHistory``).

The thread keeps ticking in real time whatever the device does, because it is also the clock of
the voices the other pupils hear: device ``null`` is a sink that paces itself on the monotonic
clock and plays nowhere (tests, demos, a kit without speakers); a missing or failing device is
closed, the thread ticks on its own clock (status ``missing`` or ``error``) and tries to open it
again every ``retry_interval`` seconds, like the microphone (``microphone.py``: PortAudio is
re-scanned before each attempt, unless another stream is open). Never a crash: an unexpected
error is logged and reported as ``error``.

``tap`` (tests, bench): called with each block written and the monotonic time its first sample
should leave the device: the write's return plus the stream's reported output latency (for
``null``, one block: 20 ms).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from .base import AUDIO_BLOCK_SAMPLES, AUDIO_SAMPLE_RATE, DEFAULT_RETRY_INTERVAL, SourceState
from .microphone import MAX_SILENCE_LAG
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

NULL_DEVICE = "null"
NULL_LATE_S = 0.005
"""A write this late after the previous block has ended is an underflow of the null device."""
NOT_PLAYING = "device stopped playing"
UNEXPECTED = "speaker error"
_OPEN_ERRORS = open_errors("device cannot play 48 kHz mono")

SILENCE = np.zeros(AUDIO_BLOCK_SAMPLES, np.int16)
SILENCE.setflags(write=False)

Tick = Callable[[], np.ndarray | None]
Played = Callable[[np.ndarray, float], None]
"""Called with each block played (not the silence of nobody speaking) and its play time."""
Tap = Callable[[np.ndarray, float], None]


class Output(Protocol):
    latency_s: float

    def write(self, block: np.ndarray) -> bool:
        """Blocking until the device took the block; True if it ran dry before (underflow)."""

    def play_time(self) -> float:
        """Monotonic time the block just written starts to leave the device."""

    def close(self) -> None: ...


class NullOutput:
    """Plays nowhere, in real time, like a device with one 20 ms block of buffer: ``write``
    queues the block and returns once the previous one starts playing; each block plays for
    20 ms from when the previous one ends. A block that comes after the previous one has ended
    (the thread stalled more than :data:`NULL_LATE_S`) plays from when it came, after a gap of
    silence, as a device that ran dry: the play times the echo canceller and the tests see are
    the physical ones, not a schedule the thread did not keep. The buffer gives the render to
    the echo canceller 20 ms before it plays (without it, the microphone's thread could ask for
    a block the speaker's thread, woken late, had not recorded yet)."""

    latency_s = BLOCK_SECONDS

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._start: float | None = None

    def write(self, block: np.ndarray) -> bool:
        now = time.monotonic()
        duration = block.size / AUDIO_SAMPLE_RATE
        previous = self._start
        late = previous is not None and now > previous + BLOCK_SECONDS + NULL_LATE_S
        if previous is None or late:
            self._start = now + self.latency_s
        else:
            self._stop.wait(max(0.0, previous - now))  # room once the previous one plays
            self._start = previous + duration
        return late

    def play_time(self) -> float:
        return self._start if self._start is not None else time.monotonic()

    def close(self) -> None:
        pass


class _DeviceOutput:
    """A PortAudio stream. A block's play time is the write's return plus the reported output
    latency, kept contiguous with the previous block's (the return time jitters with the
    thread's wake-up) unless it is more than a block away (an underflow, clock drift)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.latency_s = float(stream.latency)
        self._next: float | None = None
        self._start = 0.0

    def write(self, block: np.ndarray) -> bool:
        underflowed = bool(self._stream.write(block))
        measured = time.monotonic() + self.latency_s
        if self._next is None or abs(measured - self._next) > BLOCK_SECONDS:
            self._next = measured
        self._start = self._next
        self._next += block.size / AUDIO_SAMPLE_RATE
        return underflowed

    def play_time(self) -> float:
        return self._start

    def close(self) -> None:
        close_stream(self._stream)


class Speaker:
    """The output device thread (module docstring)."""

    def __init__(
        self,
        device: str,
        tick: Tick,
        played: Played = lambda block, when: None,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        tap: Tap | None = None,
    ) -> None:
        self.device = device
        self._tick = tick
        self._played = played
        self._retry_interval = retry_interval
        self.tap = tap
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state = SourceState.STOPPED
        self._detail = ""
        self._latency_s: float | None = None
        self.blocks = 0
        """Blocks handed to the device (or the null sink), silence included."""
        self.underflows = 0
        self.opened = 0
        """Times the device was opened: a caller resets the echo canceller when it changes."""

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="source-speaker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Blocking; idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            join_thread(thread, "speaker")
        self._set_state(SourceState.STOPPED, "")

    def status(self) -> dict[str, str]:
        with self._lock:
            latency = "" if self._latency_s is None else f"{self._latency_s * 1000:.0f}"
            return {
                "state": str(self._state),
                "detail": self._detail,
                "device": self.device,
                "latency_ms": latency,
            }

    @property
    def state(self) -> SourceState:
        with self._lock:
            return self._state

    # -- the device thread ---------------------------------------------------------------------

    def _run(self) -> None:
        schedule = Schedule(BLOCK_SECONDS, MAX_SILENCE_LAG, self._stop)
        keep_running(
            "speaker",
            self._stop,
            self._session,
            lambda: self._tick_without_device(schedule),
            self._set_state,
            UNEXPECTED,
            self._retry_interval,
        )

    def _session(self) -> None:
        """Open the output and play until it fails or stop is requested."""
        output = self._open()
        if output is None:
            return
        self.opened += 1
        with self._lock:
            self._latency_s = output.latency_s
        self._set_state(SourceState.OK, "played nowhere" if self.device == NULL_DEVICE else "")
        try:
            self._play(output)
        except Exception as exc:  # PortAudioError when a USB speaker is unplugged
            log.warning("speaker: playback failed: %s", exc)
            self._set_state(SourceState.ERROR, NOT_PLAYING)
        finally:
            output.close()

    def _play(self, output: Output) -> None:
        while not self._stop.is_set():
            block = self._tick()
            out = SILENCE if block is None else block
            underflowed = output.write(out)
            when = output.play_time()
            if block is not None:
                self._played(block, when)
            self.blocks += 1
            self.underflows += underflowed
            if self.tap is not None:
                self.tap(out, when)

    def _tick_without_device(self, schedule: Schedule) -> None:
        """No device: the voices keep their clock (the other pupils still hear them)."""
        end = time.monotonic() + self._retry_interval
        while time.monotonic() < end:
            schedule.take()
            self._tick()
            if not schedule.wait():
                return

    def _open(self) -> Output | None:
        if self.device == NULL_DEVICE:
            return NullOutput(self._stop)
        stream = open_stream(
            "speaker", "OutputStream", self.device, self._set_state, _OPEN_ERRORS, latency="low"
        )
        return _DeviceOutput(stream) if stream is not None else None

    def _set_state(self, state: SourceState, detail: str) -> None:
        with self._lock:
            changed = state != self._state or detail != self._detail
            self._state, self._detail = state, detail
        if changed:
            log.info("speaker: %s%s", state, f" ({detail})" if detail else "")
