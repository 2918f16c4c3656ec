"""What the microphone and the speaker threads share of PortAudio (through sounddevice).

Each device thread (``microphone.py``, ``speaker.py``) opens its stream with
:func:`open_stream`: PortAudio re-initialised first, so a USB device plugged in again is found
by name (≈ 40 ms on the dev VM; ALSA re-reads its configuration then too), unless another
stream of this process is open (:data:`OPEN_STREAMS`); a failure becomes a plain status
(``missing`` / ``error`` and why), never an exception. ``sounddevice`` is imported lazily:
without libportaudio the import fails, which becomes "audio system unavailable". A thread that
has no device keeps time with :class:`Schedule`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .base import AUDIO_BLOCK_SAMPLES, AUDIO_SAMPLE_RATE, SourceState

log = logging.getLogger("agent.sources")

NOT_FOUND = "device not found"
UNAVAILABLE = "audio system unavailable"
STOP_WARN_AFTER = 5.0

PORTAUDIO_LOCK = threading.Lock()
"""Held while PortAudio is re-initialised and a stream opened; other PortAudio calls in this
process (device queries) take it too, so none runs while PortAudio restarts."""
OPEN_STREAMS = [0]
"""PortAudio streams open in this process (microphone, speaker), changed under
:data:`PORTAUDIO_LOCK`. Re-initialising PortAudio closes every open stream, so a device thread
rescans only when no other stream is open (else the microphone and the speaker would close each
other's stream in turn); a device replugged meanwhile is found once both are closed."""

SetState = Callable[[SourceState, str], None]
BLOCK_SECONDS = AUDIO_BLOCK_SAMPLES / AUDIO_SAMPLE_RATE
"""One block of sound (20 ms): what a device thread reads or writes at a time."""


def open_errors(cannot: str) -> dict[int, tuple[SourceState, str]]:
    """PortAudio error codes (PaErrorCode) that say something plain about an open failure;
    ``cannot``: what a device that refuses our format is said to be unable to do."""
    return {
        -10000: (SourceState.ERROR, UNAVAILABLE),  # paNotInitialized
        -9996: (SourceState.MISSING, NOT_FOUND),  # paInvalidDevice
        -9985: (SourceState.ERROR, "device busy or unavailable"),  # paDeviceUnavailable
        -9998: (SourceState.ERROR, cannot),  # paInvalidChannelCount
        -9997: (SourceState.ERROR, cannot),  # paInvalidSampleRate
        -9994: (SourceState.ERROR, cannot),  # paSampleFormatNotSupported
    }


def device_spec(device: str) -> int | str | None:
    """``default`` → PortAudio's default device, digits → a device index, else a name."""
    if device == "default":
        return None
    return int(device) if device.isdigit() else device


def open_stream(
    what: str,
    factory: str,
    device: str,
    set_state: SetState,
    errors: dict[int, tuple[SourceState, str]],
    **options: Any,
) -> Any | None:
    """A started 48 kHz mono int16 ``sounddevice.<factory>`` (``InputStream`` or
    ``OutputStream``) on ``device``, counted in :data:`OPEN_STREAMS` (close it with
    :func:`close_stream`); None after telling ``set_state`` why it could not be opened."""
    try:
        import sounddevice
    except (OSError, ImportError) as exc:  # no libportaudio
        log.warning("%s: PortAudio unavailable: %s", what, exc)
        set_state(SourceState.ERROR, UNAVAILABLE)
        return None
    with PORTAUDIO_LOCK:
        try:
            _rescan(sounddevice)
        except sounddevice.PortAudioError as exc:
            log.warning("%s: PortAudio cannot start: %s", what, exc)
            set_state(SourceState.ERROR, UNAVAILABLE)
            return None
        try:
            stream = getattr(sounddevice, factory)(
                samplerate=AUDIO_SAMPLE_RATE,
                channels=1,
                dtype="int16",
                blocksize=AUDIO_BLOCK_SAMPLES,
                device=device_spec(device),
                **options,
            )
        except ValueError as exc:  # no device (or several) of that name
            log.info("%s: cannot open %r: %s", what, device, exc)
            set_state(SourceState.MISSING, NOT_FOUND)
            return None
        except sounddevice.PortAudioError as exc:
            log.info("%s: cannot open %r: %s", what, device, exc)
            set_state(*open_failure(exc, errors))
            return None
        OPEN_STREAMS[0] += 1
    try:
        stream.start()
    except sounddevice.PortAudioError as exc:
        log.info("%s: cannot start %r: %s", what, device, exc)
        close_stream(stream)
        set_state(*open_failure(exc, errors))
        return None
    log.debug("%s: opened %r", what, device)
    return stream


def _rescan(sd: Any) -> None:
    """Re-initialise PortAudio so that it lists the devices present now (not while another
    stream is open: see :data:`OPEN_STREAMS`)."""
    if OPEN_STREAMS[0] > 0:
        return
    if getattr(sd, "_initialized", 0) > 0:
        try:
            sd._terminate()
        except sd.PortAudioError:
            log.debug("audio: PortAudio terminate failed", exc_info=True)
    sd._initialize()


def close_stream(stream: Any) -> None:
    """Close a stream :func:`open_stream` opened, and count it closed."""
    try:
        stream.close(ignore_errors=True)
    except Exception:  # closing a vanished device may fail too
        log.warning("audio: closing the device failed", exc_info=True)
    finally:
        with PORTAUDIO_LOCK:
            OPEN_STREAMS[0] -= 1


def open_failure(
    exc: Exception, errors: dict[int, tuple[SourceState, str]]
) -> tuple[SourceState, str]:
    if "Error querying device" in str(exc):  # "default" when PortAudio has no such device
        return SourceState.MISSING, NOT_FOUND
    code = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
    return errors.get(code, (SourceState.ERROR, "device cannot be opened"))


def join_thread(thread: threading.Thread, what: str) -> None:
    if thread is threading.current_thread():
        return
    thread.join(STOP_WARN_AFTER)
    while thread.is_alive():
        log.warning("%s: still waiting for the device to let go", what)
        thread.join(STOP_WARN_AFTER)


def keep_running(
    what: str,
    stop: threading.Event,
    session: Callable[[], None],
    without_device: Callable[[], None],
    set_state: SetState,
    unexpected: str,
    retry_interval: float,
) -> None:
    """A device thread's loop until ``stop``: a ``session`` with the device until it fails,
    then ``without_device`` (the thread keeps time for up to the retry interval), again. The
    thread never dies: an unexpected error is logged and reported as ``unexpected``."""
    while not stop.is_set():
        try:
            session()
        except Exception:  # the device thread never dies: log, report, keep going
            log.exception("%s: unexpected error", what)
            set_state(SourceState.ERROR, unexpected)
        if stop.is_set():
            break
        try:
            without_device()
        except Exception:
            log.exception("%s: unexpected error while keeping time without a device", what)
            stop.wait(retry_interval)
    set_state(SourceState.STOPPED, "")


class Schedule:
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
