"""The microphone through sounddevice (PortAudio): 48 kHz mono, 20 ms blocks, one thread.

The thread reads blocks with PortAudio's blocking ``read`` and hands them to the audio encoder.
A missing or failing device is released; the thread then sends silence at the nominal rate
(status ``missing`` or ``error``) and tries again every ``retry_interval`` seconds.
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
    AudioSink,
    AudioSource,
    RawAudioBlock,
    SourceState,
    SourceStatus,
)
from .synthetic import rms_dbfs

log = logging.getLogger("agent.sources")

BLOCK_SECONDS = AUDIO_BLOCK_SAMPLES / AUDIO_SAMPLE_RATE


def device_spec(device: str) -> int | str | None:
    if device == "default":
        return None
    return int(device) if device.isdigit() else device


class SoundDeviceMicrophone(AudioSource):
    id = "microphone"

    def __init__(self, cfg: MicrophoneConfig, retry_interval: float = 3.0) -> None:
        self.device = cfg.device
        self._retry_interval = retry_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = SourceState.STOPPED
        self._detail = ""
        self._level: float | None = None
        self._overflows = 0
        self._blocks = 0

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
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        self._state = SourceState.STOPPED

    def level_dbfs(self) -> float | None:
        return self._level

    def status(self) -> SourceStatus:
        return SourceStatus(
            id=self.id,
            kind=self.kind,
            device=self.device,
            state=self._state,
            detail=self._detail,
            extra={"blocks": self._blocks, "overflows": self._overflows},
        )

    def _run(self, sink: AudioSink, clock: MediaClock) -> None:
        while not self._stop.is_set():
            stream = self._open()
            if stream is None:
                self._send_silence(sink, clock, self._retry_interval)
                continue
            try:
                self._read_loop(stream, sink, clock)
            except Exception as exc:  # PortAudio errors when a USB microphone is unplugged
                log.info("microphone: capture failed: %s", exc)
                self._set_state(SourceState.ERROR, "microphone stopped sending")
            finally:
                try:
                    stream.close()
                except Exception:  # closing a vanished device may fail too
                    log.debug("microphone: close failed", exc_info=True)
            if not self._stop.is_set():
                self._send_silence(sink, clock, self._retry_interval)

    def _open(self) -> Any:
        try:
            import sounddevice
        except OSError:
            self._set_state(SourceState.ERROR, "audio system unavailable")
            return None
        try:
            stream = sounddevice.InputStream(
                samplerate=AUDIO_SAMPLE_RATE,
                channels=1,
                dtype="int16",
                blocksize=AUDIO_BLOCK_SAMPLES,
                device=device_spec(self.device),
            )
            stream.start()
        except (sounddevice.PortAudioError, ValueError) as exc:
            log.info("microphone: cannot open %r: %s", self.device, exc)
            self._set_state(SourceState.MISSING, "device not found")
            return None
        log.info("microphone: opened %r", self.device)
        self._set_state(SourceState.OK, "")
        return stream

    def _read_loop(self, stream: Any, sink: AudioSink, clock: MediaClock) -> None:
        while not self._stop.is_set():
            data, overflowed = stream.read(AUDIO_BLOCK_SAMPLES)
            if overflowed:
                self._overflows += 1
            samples = np.ascontiguousarray(data[:, 0], dtype=np.int16)
            self._deliver(RawAudioBlock(samples, clock.now() - BLOCK_SECONDS), sink)

    def _send_silence(self, sink: AudioSink, clock: MediaClock, seconds: float) -> None:
        silence = np.zeros(AUDIO_BLOCK_SAMPLES, np.int16)
        end = time.monotonic() + seconds
        next_at = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < end:
            self._deliver(RawAudioBlock(silence, clock.now(), silent_placeholder=True), sink)
            next_at += BLOCK_SECONDS
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _deliver(self, block: RawAudioBlock, sink: AudioSink) -> None:
        self._blocks += 1
        self._level = rms_dbfs(block.samples)
        sink(block)

    def _set_state(self, state: SourceState, detail: str) -> None:
        if state != self._state or detail != self._detail:
            log.info("microphone: %s %s", state, detail)
        self._state, self._detail = state, detail
