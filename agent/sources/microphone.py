"""The microphone through sounddevice (PortAudio): 48 kHz mono int16, 20 ms blocks, one thread.

The thread owns a ``sounddevice.InputStream`` and reads blocks with PortAudio's blocking
``read``. A missing or failing device is closed; the thread then sends silence every 20 ms
(status ``missing`` or ``error``) and tries to open it again every ``retry_interval`` seconds.

PortAudio lists devices once, when it is initialised; before each attempt to open the device the
thread re-initialises it (ALSA re-reads its configuration then too), so a USB microphone plugged
in again is found by name. That takes ≈ 40 ms on the dev VM, closes any other PortAudio stream
in the process, and sounddevice silences fd 2 meanwhile.

``sounddevice`` is imported lazily: without libportaudio the import fails, which becomes the
status ``error`` "audio system unavailable", not a crash.
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
    AUDIO_SAMPLE_RATE,
    DEFAULT_RETRY_INTERVAL,
    AudioSink,
    AudioSource,
    RawAudioBlock,
    SourceState,
    SourceStatus,
)

log = logging.getLogger("agent.sources")

BLOCK_SECONDS = AUDIO_BLOCK_SAMPLES / AUDIO_SAMPLE_RATE
FULL_SCALE = 32768.0
SILENCE_DBFS = -100.0
STOP_WARN_AFTER = 5.0
MAX_SILENCE_LAG = 0.2
"""Silent blocks missed by up to this long (an attempt to open the device) are caught up."""

SILENCE = np.zeros(AUDIO_BLOCK_SAMPLES, np.int16)
SILENCE.setflags(write=False)

NOT_FOUND = "device not found"
UNAVAILABLE = "audio system unavailable"
NOT_DELIVERING = "device stopped delivering sound"
UNEXPECTED = "microphone error"

# PortAudio error codes (PaErrorCode) that say something plain about an open failure.
_OPEN_ERRORS = {
    -10000: (SourceState.ERROR, UNAVAILABLE),  # paNotInitialized
    -9996: (SourceState.MISSING, NOT_FOUND),  # paInvalidDevice
    -9985: (SourceState.ERROR, "device busy or unavailable"),  # paDeviceUnavailable
    -9998: (SourceState.ERROR, "device cannot record 48 kHz mono"),  # paInvalidChannelCount
    -9997: (SourceState.ERROR, "device cannot record 48 kHz mono"),  # paInvalidSampleRate
    -9994: (SourceState.ERROR, "device cannot record 48 kHz mono"),  # paSampleFormatNotSupported
}

PORTAUDIO_LOCK = threading.Lock()
"""Held while PortAudio is re-initialised and a stream opened; other PortAudio calls in this
process (device queries) take it too, so none runs while PortAudio restarts."""
OPEN_STREAMS = [0]
"""PortAudio streams open in this process (microphone, speaker), changed under
:data:`PORTAUDIO_LOCK`. Re-initialising PortAudio closes every open stream, so a device thread
rescans only when no other stream is open (else the microphone and the speaker would close each
other's stream in turn); a device replugged meanwhile is found once both are closed."""


def device_spec(device: str) -> int | str | None:
    """``default`` → PortAudio's default input, digits → a device index, else a name."""
    if device == "default":
        return None
    return int(device) if device.isdigit() else device


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level of int16 samples in dBFS (full scale 32768), floored at −100."""
    if samples.size == 0:
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, round(20.0 * float(np.log10(rms / FULL_SCALE)), 1))


def _rescan(sd: Any) -> None:
    """Re-initialise PortAudio so that it lists the devices present now (not while another
    stream is open: see :data:`OPEN_STREAMS`)."""
    if OPEN_STREAMS[0] > 0:
        return
    if getattr(sd, "_initialized", 0) > 0:
        try:
            sd._terminate()
        except sd.PortAudioError:
            log.debug("microphone: PortAudio terminate failed", exc_info=True)
    sd._initialize()


def _close_stream(stream: Any) -> None:
    """Close a stream :func:`_rescan`'s caller opened, and count it closed."""
    try:
        stream.close(ignore_errors=True)
    except Exception:  # closing a vanished device may fail too
        log.warning("audio: closing the device failed", exc_info=True)
    finally:
        with PORTAUDIO_LOCK:
            OPEN_STREAMS[0] -= 1


def _open_failure(exc: Exception) -> tuple[SourceState, str]:
    code = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
    return _OPEN_ERRORS.get(code, (SourceState.ERROR, "device cannot be opened"))


class _Schedule:
    """One slot every ``period`` seconds, waited on with the stop event. Slots missed by up to
    ``max_lag`` are caught up, so silence keeps pace with real time sample for sample; after a
    longer stall the schedule restarts from now."""

    def __init__(self, period: float, max_lag: float, stop: threading.Event) -> None:
        self._period = period
        self._max_lag = max_lag
        self._stop = stop
        self._next = time.monotonic()

    def take(self) -> float:
        """How late the slot taken now is, in seconds (0 when on time)."""
        now = time.monotonic()
        if now - self._next > self._max_lag:
            self._next = now
        lag = max(0.0, now - self._next)
        self._next += self._period
        return lag

    @property
    def next_slot(self) -> float:
        """Monotonic time of the slot :meth:`wait` waits for."""
        return self._next

    def wait(self) -> bool:
        """Wait for the next slot; False if stop was requested."""
        return not self._stop.wait(max(0.0, self._next - time.monotonic()))


def _join_thread(thread: threading.Thread) -> None:
    if thread is threading.current_thread():
        return
    thread.join(STOP_WARN_AFTER)
    while thread.is_alive():
        log.warning("microphone: still waiting for the device to let go")
        thread.join(STOP_WARN_AFTER)


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
            _join_thread(thread)
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
        schedule = _Schedule(BLOCK_SECONDS, MAX_SILENCE_LAG, self._stop)
        while not self._stop.is_set():
            try:
                self._session(sink, clock)
            except Exception:  # the device thread never dies: log, report, keep going
                log.exception("microphone: unexpected error")
                self._set_state(SourceState.ERROR, UNEXPECTED)
            if self._stop.is_set():
                break
            try:
                self._send_silence(sink, clock, schedule)
            except Exception:
                log.exception("microphone: unexpected error while sending silence")
                self._stop.wait(self._retry_interval)
        self._set_state(SourceState.STOPPED, "")

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
            _close_stream(stream)

    def _open(self) -> Any:
        try:
            import sounddevice
        except (OSError, ImportError) as exc:  # no libportaudio
            log.warning("microphone: PortAudio unavailable: %s", exc)
            self._set_state(SourceState.ERROR, UNAVAILABLE)
            return None
        with PORTAUDIO_LOCK:
            try:
                _rescan(sounddevice)
            except sounddevice.PortAudioError as exc:
                log.warning("microphone: PortAudio cannot start: %s", exc)
                self._set_state(SourceState.ERROR, UNAVAILABLE)
                return None
            try:
                stream = sounddevice.InputStream(
                    samplerate=AUDIO_SAMPLE_RATE,
                    channels=1,
                    dtype="int16",
                    blocksize=AUDIO_BLOCK_SAMPLES,
                    device=device_spec(self.device),
                )
            except ValueError as exc:  # no device (or several) of that name
                log.info("microphone: cannot open %r: %s", self.device, exc)
                self._set_state(SourceState.MISSING, NOT_FOUND)
                return None
            except sounddevice.PortAudioError as exc:
                log.info("microphone: cannot open %r: %s", self.device, exc)
                self._set_state(*_open_failure(exc))
                return None
            OPEN_STREAMS[0] += 1
        try:
            stream.start()
        except sounddevice.PortAudioError as exc:
            log.info("microphone: cannot start %r: %s", self.device, exc)
            _close_stream(stream)
            self._set_state(*_open_failure(exc))
            return None
        log.debug("microphone: opened %r", self.device)
        return stream

    def _read_blocks(self, stream: Any, sink: AudioSink, clock: MediaClock) -> None:
        while not self._stop.is_set():
            data, overflowed = stream.read(AUDIO_BLOCK_SAMPLES)
            capture_time = clock.now() - BLOCK_SECONDS
            samples = np.ascontiguousarray(data[:, 0], dtype=np.int16)
            self._deliver(RawAudioBlock(samples, capture_time), sink, bool(overflowed))

    def _send_silence(self, sink: AudioSink, clock: MediaClock, schedule: _Schedule) -> None:
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
