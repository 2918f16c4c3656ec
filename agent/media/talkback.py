"""Talk-back media: the voices of the pupils who have the floor, to the room and to the class.

A pupil given the floor sends Opus in its WHEP connection (docs/talkback.md, "The media path");
aiortc decodes it to ``av.AudioFrame`` (48 kHz, s16, stereo, 20 ms). From there:

```
viewer (event loop) ─ Downmix ─► VoiceBuffer (jitter) ─┐
                                                        ├─ TalkbackMixer.tick() every 20 ms,
                                                        │  from the speaker thread:
                                                        │   mix ─► speaker device, echo.played
                                                        │   each voice's block ─► send queue
room microphone thread ─ echo.captured ─ mix_for_pupils(clean, send queues) ─► Opus encoders:
    "everyone" (room + every voice)  and, per floor holder, "minus" (room + the other voices)
```

- The speaker thread is the clock of the voices: it pops one 20 ms block per voice per tick,
  whether a device plays it or not (missing device, ``null``), so the other pupils hear the
  voice even when the room's speaker is gone.
- :class:`VoiceBuffer` is the small jitter buffer: it starts a voice once :data:`PREFILL_BLOCKS`
  are queued (40 ms: aiortc hands over decoded frames in bursts when packets arrive together),
  and never holds more than :data:`MAX_DEPTH_BLOCKS` (120 ms): beyond, the oldest audio goes, so
  latency cannot creep up when the pupil's clock runs faster than the speaker's.
- Mix-minus: the pupil who speaks gets the room and the other voices, not their own; a second
  Opus encoder per floor holder (at most ``kiosk.floor_max`` = 2) makes that stream.

Everything here is pure or thread-safe with short locks; no I/O, no sleeping: ticks are time.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable

import av
import numpy as np

from ..sources.speaker import Speaker, Tap
from .echo import EchoCanceller, EchoCancellerUnavailable

log = logging.getLogger("agent.media.talkback")

SAMPLE_RATE = 48_000
BLOCK_SAMPLES = 960
"""20 ms: the speaker's and the microphone's block."""
PREFILL_BLOCKS = 2
"""A voice starts playing once 40 ms are queued (and again after running dry)."""
MAX_DEPTH_BLOCKS = 6
"""At most 120 ms queued per voice; beyond, the oldest samples are dropped down to the prefill."""
STANDING_WINDOW_BLOCKS = 50
"""A voice's queue that never fell to the prefill during this many ticks (1 s) is cut to it:
after a burst (packets held up, then delivered together) the queue would otherwise keep the
extra delay for the rest of the turn, the input and output rates being equal."""
SEND_QUEUE_BLOCKS = 4
"""Blocks of each voice played but not yet mixed into the pupils' sound (80 ms: the speaker
and microphone threads tick at the same rate with a phase between them; more means drift)."""
ECHO_TAIL_S = 1.0
"""The echo canceller keeps running this long after the last voice stops (the room's echo of
its last words; paths measured up to 150 ms)."""
HISTORY_BLOCKS = 50
"""One second of played blocks kept for the echo canceller's render."""

SILENCE = np.zeros(BLOCK_SAMPLES, np.int16)
SILENCE.setflags(write=False)


class Downmix:
    """``av.AudioFrame`` (any layout, format and rate) → 48 kHz mono int16 samples.

    libswresample through PyAV: Opus decoded by aiortc is s16 stereo 48 kHz, so this is an
    average of the two channels, but a pupil's other codec settings would be resampled too."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)

    def __call__(self, frame: av.AudioFrame) -> np.ndarray:
        frame.pts = None  # resample by content only: a pupil's timestamps are not ours to trust
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        if not out:
            return np.zeros(0, np.int16)
        return np.ascontiguousarray(np.concatenate(out), dtype=np.int16)


class VoiceBuffer:
    """One voice's jitter buffer: pushed by the event loop, popped 20 ms at a time by the
    speaker thread. Bounded in latency, never in waiting: an empty buffer gives ``None``."""

    def __init__(self, prefill: int = PREFILL_BLOCKS, max_depth: int = MAX_DEPTH_BLOCKS) -> None:
        self._lock = threading.Lock()
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._queued = 0
        self._prefill = prefill * BLOCK_SAMPLES
        self._max = max_depth * BLOCK_SAMPLES
        self._playing = False
        self._window = 0
        self._window_min = 0
        self.pushed = 0
        """Samples received."""
        self.dropped = 0
        """Samples dropped: over ``max_depth``, or a standing backlog."""
        self.underruns = 0
        """Times the voice ran dry while playing (a late or lost packet)."""

    @property
    def queued(self) -> int:
        return self._queued

    def push(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        with self._lock:
            self._chunks.append(samples)
            self._queued += samples.size
            self.pushed += samples.size
            if self._queued > self._max:
                self._drop(self._queued - self._prefill)

    def pop(self) -> np.ndarray | None:
        """The next 20 ms, or None while priming / after running dry (the tick plays silence)."""
        with self._lock:
            if not self._playing:
                if self._queued < self._prefill:
                    return None
                self._playing = True
            if self._queued < BLOCK_SAMPLES:
                self._playing = False
                self.underruns += 1
                self._window = 0
                if self._queued == 0:
                    return None
            self._watch_standing_backlog()
            block = np.zeros(BLOCK_SAMPLES, np.int16)
            filled = 0
            while filled < BLOCK_SAMPLES and self._chunks:
                head = self._chunks[0]
                take = min(head.size, BLOCK_SAMPLES - filled)
                block[filled : filled + take] = head[:take]
                if take == head.size:
                    self._chunks.popleft()
                else:
                    self._chunks[0] = head[take:]
                self._queued -= take
                filled += take
            return block

    def _watch_standing_backlog(self) -> None:
        """Cut a backlog above the prefill that stood for a whole window (lock held)."""
        if self._window == 0:
            self._window_min = self._queued
        self._window_min = min(self._window_min, self._queued)
        self._window += 1
        if self._window >= STANDING_WINDOW_BLOCKS:
            self._drop(self._window_min - self._prefill)
            self._window = 0

    def _drop(self, count: int) -> None:
        while count > 0 and self._chunks:
            head = self._chunks[0]
            cut = min(head.size, count)
            if cut == head.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = head[cut:]
            self._queued -= cut
            self.dropped += cut
            count -= cut


def saturating_sum(blocks: Iterable[np.ndarray]) -> np.ndarray:
    """Sum int16 blocks of 960 samples, clipped to int16 (two loud voices must not wrap)."""
    total = np.zeros(BLOCK_SAMPLES, np.int32)
    for block in blocks:
        total += block
    return np.clip(total, -32768, 32767).astype(np.int16)


def mix_for_pupils(
    room: np.ndarray, voices: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The room's (echo-cancelled) block plus the voices: what every pupil hears, and per
    speaking pupil the mix-minus (the room and the other voices, not their own)."""
    everyone = saturating_sum([room, *voices.values()])
    minus = {
        voice: saturating_sum([room, *(b for other, b in voices.items() if other != voice)])
        for voice in voices
    }
    return everyone, minus


class TalkbackMixer:
    """The voices of the floor holders: ``push`` from the event loop, ``tick`` from the speaker
    thread, ``take_send`` from the microphone thread. A voice that is not open is discarded."""

    def __init__(
        self,
        prefill: int = PREFILL_BLOCKS,
        max_depth: int = MAX_DEPTH_BLOCKS,
        send_blocks: int = SEND_QUEUE_BLOCKS,
    ) -> None:
        self._lock = threading.Lock()
        self._voices: dict[str, VoiceBuffer] = {}
        self._send: dict[str, collections.deque[np.ndarray]] = {}
        self._prefill = prefill
        self._max_depth = max_depth
        self._send_blocks = send_blocks
        self.discarded = 0
        """Samples received from pupils who did not have the floor."""
        self.ticks = 0

    def open(self, voice: str) -> None:
        with self._lock:
            if voice not in self._voices:
                self._voices[voice] = VoiceBuffer(self._prefill, self._max_depth)
                self._send[voice] = collections.deque(maxlen=self._send_blocks)

    def close(self, voice: str) -> None:
        with self._lock:
            self._voices.pop(voice, None)
            self._send.pop(voice, None)

    def voices(self) -> list[str]:
        with self._lock:
            return list(self._voices)

    def buffer(self, voice: str) -> VoiceBuffer | None:
        with self._lock:
            return self._voices.get(voice)

    def push(self, voice: str, samples: np.ndarray) -> bool:
        """Queue a decoded block of ``voice``; False (and counted) if it has no floor."""
        buffer = self.buffer(voice)
        if buffer is None:
            self.discarded += samples.size
            return False
        buffer.push(samples)
        return True

    def tick(self) -> np.ndarray | None:
        """20 ms of the room speaker's mix; None when no voice is open (nothing to play)."""
        with self._lock:
            voices = list(self._voices.items())
            sends = dict(self._send)
            self.ticks += 1
        if not voices:
            return None
        blocks = []
        for voice, buffer in voices:
            block = buffer.pop()
            block = SILENCE if block is None else block
            blocks.append(block)
            queue = sends.get(voice)
            if queue is not None:
                queue.append(block)  # deque(maxlen): the oldest goes if the mic thread lags
        return saturating_sum(blocks)

    def take_send(self) -> dict[str, np.ndarray]:
        """One block per open voice for the pupils' sound (silence if the speaker's clock has
        not produced it yet)."""
        with self._lock:
            sends = list(self._send.items())
        out: dict[str, np.ndarray] = {}
        for voice, queue in sends:
            try:
                out[voice] = queue.popleft()
            except IndexError:
                out[voice] = SILENCE
        return out


class Timeline:
    """Sample positions on the monotonic clock for a device's blocks: contiguous while the
    device's times stay within one block of them (thread wake-up jitter), re-anchored when
    they do not (a stall, a re-opened device, clock drift beyond 20 ms)."""

    def __init__(self) -> None:
        self._next: int | None = None

    def place(self, when: float, size: int = BLOCK_SAMPLES) -> int:
        index = round(when * SAMPLE_RATE)
        if self._next is None or abs(index - self._next) > BLOCK_SAMPLES:
            self._next = index
        start = self._next
        self._next += size
        return start


class RenderHistory:
    """What the speaker played, by sample position on the monotonic clock (last second):
    written by the speaker thread with each block's play time (``Speaker``'s outputs give
    contiguous times, with a gap where the device ran dry), read by the microphone thread.

    Pairing the echo canceller's render with each captured block by time, in the microphone's
    thread, keeps the two streams aligned when a device thread stalls; pairing by count (each
    thread feeding the canceller as it runs) shifted the render by every stall: 4–15 dB of ERLE
    left in the end-to-end test on this shared VM under load, 21–40 dB by time."""

    def __init__(self, blocks: int = HISTORY_BLOCKS) -> None:
        self._lock = threading.Lock()
        self._blocks: collections.deque[tuple[int, np.ndarray]] = collections.deque(maxlen=blocks)

    def write(self, block: np.ndarray, when: float) -> None:
        start = round(when * SAMPLE_RATE)
        with self._lock:
            self._blocks.append((start, block))

    def read(self, start: int, size: int = BLOCK_SAMPLES) -> np.ndarray:
        """Samples ``[start, start + size)``; silence where nothing was played."""
        out = np.zeros(size, np.int16)
        with self._lock:
            blocks = list(self._blocks)
        for first, block in blocks:
            lo, hi = max(start, first), min(start + size, first + block.size)
            if lo < hi:
                out[lo - start : hi - start] = block[lo - first : hi - first]
        return out

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()


class Talkback:
    """Talk-back for one class: the mixer, the speaker thread and the echo canceller.

    The canceller runs only while a pupil has the floor and for :data:`ECHO_TAIL_S` after: the
    rest of the class the teacher's microphone goes to the encoder untouched (AEC3 with nothing
    played still delays it by 9 ms and changes it: measured, the output matches the input with an
    SNR of 18 dB only) and costs nothing. It is reset when it starts again: AEC3 converges within
    the first second (docs/talkback.md, 32 dB in the first second on a fresh canceller).
    """

    def __init__(
        self,
        device: str,
        floor_max: int,
        now: Callable[[], float] = time.monotonic,
        echo: EchoCanceller | bool = True,
        tap: Tap | None = None,
    ) -> None:
        self.mixer = TalkbackMixer()
        self.floor_max = floor_max
        self._now = now
        self.echo: EchoCanceller | None = None
        if isinstance(echo, EchoCanceller):
            self.echo = echo
        elif echo:
            try:
                self.echo = EchoCanceller()
            except EchoCancellerUnavailable as exc:
                log.warning("talk-back without echo cancellation: %s", exc)
        self.speaker = Speaker(device, self.mixer.tick, self._played, tap=tap)
        self.history = RenderHistory()
        self._capture = Timeline()
        self._echo_until = -1.0
        self._echo_running = False
        self._opened_seen = 0

    def start(self) -> None:
        self.speaker.start()

    def stop(self) -> None:
        """Blocking (joins the speaker thread)."""
        self.speaker.stop()

    def open(self, voice: str) -> bool:
        voices = self.mixer.voices()
        if voice in voices:
            return True
        if len(voices) >= self.floor_max:
            log.info("talk-back: %d voices already open, %s refused", len(voices), voice)
            return False
        self.mixer.open(voice)
        return True

    def close(self, voice: str) -> None:
        if voice in self.mixer.voices():
            self.mixer.close(voice)
            self._echo_until = self._now() + ECHO_TAIL_S

    def _played(self, block: np.ndarray, when: float) -> None:
        """Speaker thread: the mix just handed to the device and when it plays."""
        if self.echo is not None:
            self.history.write(block, when)

    def room(self, samples: np.ndarray, placeholder: bool, capture_time: float) -> np.ndarray:
        """Microphone thread: the room's block (captured at ``capture_time``, monotonic),
        echo-cancelled while talk-back is active. The canceller gets, just before, the render
        that played over the same interval (:class:`RenderHistory`): the echo in the block then
        always comes after it, by the room's path plus the input latency (the capture time is
        when PortAudio's read returned, later than the sound), which AEC3's delay estimator
        finds; a render taken any later could come after its own echo and not be cancelled."""
        echo = self.echo
        if echo is None:
            return samples
        active = bool(self.mixer.voices()) or self._now() < self._echo_until
        opened = self.speaker.opened
        if active and (not self._echo_running or opened != self._opened_seen):
            echo.reset()  # a new turn, or the output device was re-opened: a new echo path
            self._opened_seen = opened
        self._echo_running = active
        start = self._capture.place(capture_time, samples.size)
        if not active or placeholder:
            return samples
        echo.played(self.history.read(start, samples.size))
        return echo.captured(samples)
