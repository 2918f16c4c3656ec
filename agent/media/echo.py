"""Acoustic echo cancellation for talk-back: the room microphone minus what the speakers played.

When a remote pupil has the floor their voice plays on the classroom's speakers and the room
microphone hears it again, 20–80 ms later (plus the devices' buffering): without cancellation
the pupil hears themself, and the other pupils hear them twice. :class:`EchoCanceller` removes
that echo with the WebRTC audio processing module's AEC3 (the canceller Chromium runs), through
the ``pywebrtc-audio`` wheel (a self-contained build, no system library).

Chosen by measurement against speexdsp (``python -m bench.echo``; docs/talkback.md, "Echo
cancellation"): on simulated classroom speech AEC3 gives 28–33 dB of ERLE from the first second
for echo delays of 20–150 ms with no tuning (its delay estimator finds the path), finds a path
that jumps by 30 ms again within 1.25 s, keeps the near end alone within 0.3 dB and costs
≈ 0.11 ms of CPU per 10 ms frame at 48 kHz. speexdsp reaches more ERLE once converged on a fixed
path (45–50 dB) and ducks the near end less in double talk, but gives 1–9 dB in the first second,
needs its filter to span the whole delay and does not recover from a delay jump (4 dB).
AEC3 delays the near end by 9 ms (its band-splitting filter bank).

Use (two device threads)::

    canceller = EchoCanceller()              # raises EchoCancellerUnavailable if no binding
    # playback thread, for every block handed to the speaker device:
    canceller.played(block)                  # int16 mono 48 kHz, any multiple of 10 ms
    # capture thread, for every microphone block, before the encoder:
    clean = canceller.captured(block)        # same shape and dtype, echo removed

``played`` only appends to a bounded queue under a short lock, so the playback thread never
waits for the signal processing; ``captured`` runs the canceller (several capture threads would
be serialised by a second lock, but the kit has one). Alignment: each captured block is paired
with the same number of samples from the head of the played queue (silence when nothing was
played), and AEC3's own delay estimator finds the echo's delay in that render stream; measured
here up to :data:`MAX_DELAY_TESTED_MS`. Every millisecond of backlog in that queue shortens the
delay the canceller sees, and a render that arrives after its own echo cannot be cancelled: a
backlog that stays above 20 ms for a second (the speaker's clock faster than the microphone's,
a burst at start) is cut to 20 ms; a passing one (a device thread that stalls and catches up)
is left, up to :data:`MAX_BACKLOG_MS`. A stalled playback thread makes ``captured`` substitute
silence, and its burst then stands in the queue until cut: AEC3 re-converges within ≈ 1.25 s
(as after any jump of the echo path).

Wiring (docs/talkback.md, agent/media/talkback.py): ``played`` gets the mono mix of the pupils'
voices exactly as the speaker device played it, over the same interval as each captured block,
called from the microphone's thread just before ``captured`` (pairing by play time: the queue
above then never holds a backlog); ``captured`` wraps the microphone's sink, before the encoder,
only while a pupil has the floor (and 1 s after). Silent placeholders from a missing microphone
pass by it unchanged (AEC3 would add faint comfort noise); ``reset`` when either device is
re-opened and at each turn.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

import numpy as np

from ..errors import AgentError

log = logging.getLogger("agent.media.echo")

SAMPLE_RATE = 48_000
FRAME_SAMPLES = SAMPLE_RATE // 100
"""The module works on 10 ms frames; blocks of any multiple of that are split."""
MAX_BACKLOG_MS = 250
"""Played audio not yet paired with a captured block beyond this is dropped (oldest first).

A passing backlog is harmless: when the capture thread stalls, its blocks wait in the device
and come in a burst that pairs with the queue as before (dropping there would shift the render
stream and cost AEC3 a second of re-convergence: measured, 18 dB instead of 30 in the
two-thread test under load). So this only bounds memory when capture has stopped; the
backlog that matters, the one that stays, is cut by :data:`STANDING_TOLERANCE`.
"""
STANDING_WINDOW_S = 1
"""A backlog that never fell below :data:`STANDING_TOLERANCE` during this long is cut to it."""
STANDING_TOLERANCE = 2 * FRAME_SAMPLES
"""20 ms, one block: the standing backlog two device threads with a phase between them keep.

Dropping it would be a jump of the render stream, and a jump costs more than it gains: measured
with bench/echo.py, AEC3 keeps 1.5–2 dB less of the near end in double talk afterwards.
"""
MAX_DELAY_TESTED_MS = 150
"""The longest echo delay (acoustic + buffering) tests/agent/media/test_echo.py measures."""

BINDING = "pywebrtc-audio"
"""The PyPI package that provides ``pywebrtc_audio`` (pyproject.toml, the ``kit`` extra)."""


class EchoCancellerUnavailable(AgentError):
    """The WebRTC audio processing binding cannot be loaded (not installed, or fails to load)."""


def load_binding() -> Any:
    """Import ``pywebrtc_audio`` or raise :exc:`EchoCancellerUnavailable` naming the package.

    Called by :class:`EchoCanceller` and meant for the agent's start-up check, so a kit without
    the binding says so at once instead of failing when a pupil is first given the floor.
    """
    try:
        import pywebrtc_audio
    except (ImportError, OSError) as exc:  # missing package, or its .so cannot load
        raise EchoCancellerUnavailable(
            f"echo cancellation unavailable: the {BINDING} package (WebRTC audio processing "
            f"module) cannot be loaded ({exc}); install the kit extra: pip install "
            "'hybrid-classroom[kit]'"
        ) from exc
    return pywebrtc_audio


def _as_block(samples: np.ndarray, what: str) -> np.ndarray:
    """Check one int16 mono block whose length is a whole number of 10 ms frames."""
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise ValueError(f"{what}: expected 1-D int16 samples, got {samples.dtype} {samples.shape}")
    if samples.size % FRAME_SAMPLES:
        raise ValueError(f"{what}: {samples.size} samples is not a multiple of {FRAME_SAMPLES}")
    return samples


class EchoCanceller:
    """AEC3 on 48 kHz mono int16: ``played`` from the playback thread, ``captured`` from the
    capture thread (module docstring). ``reset`` forgets the echo path (e.g. after the output
    device changed)."""

    def __init__(self, max_backlog_ms: int = MAX_BACKLOG_MS) -> None:
        binding = load_binding()
        try:
            self._aec = binding.EchoCanceller(sample_rate=SAMPLE_RATE, num_channels=1)
        except Exception as exc:  # the binding refused its own configuration
            raise EchoCancellerUnavailable(
                f"echo cancellation unavailable: {BINDING} failed to start ({exc})"
            ) from exc
        self._max_backlog = max_backlog_ms * SAMPLE_RATE // 1000
        self._queue: collections.deque[np.ndarray] = collections.deque()
        self._queued = 0
        self._window_taken = 0
        self._window_min = 0
        self._queue_lock = threading.Lock()
        self._process_lock = threading.Lock()
        self.frames = 0
        """10 ms frames processed."""
        self.render_missing = 0
        """Played samples that were not there when needed (replaced by silence)."""
        self.render_dropped = 0
        """Played samples dropped: beyond ``max_backlog_ms``, or a standing backlog."""

    def played(self, samples: np.ndarray) -> None:
        """What was just handed to the speakers (the mix of the pupils' voices)."""
        block = _as_block(samples, "played").copy()
        with self._queue_lock:
            self._queue.append(block)
            self._queued += block.size
            self._drop(self._queued - self._max_backlog)

    def captured(self, samples: np.ndarray) -> np.ndarray:
        """The room microphone's block with the speakers' echo removed (same length, int16)."""
        near = _as_block(samples, "captured")
        far = self._take_render(near.size)
        with self._process_lock:
            out: np.ndarray = self._aec.process(np.ascontiguousarray(near), far)
            self.frames += near.size // FRAME_SAMPLES
        return out

    def reset(self) -> None:
        """Forget the learnt echo path and the queued render."""
        with self._queue_lock:
            self._queue.clear()
            self._queued = 0
            self._window_taken = self._window_min = 0
        with self._process_lock:
            self._aec.reset()

    def _take_render(self, count: int) -> np.ndarray:
        """The next ``count`` played samples, silence where playback has not provided them."""
        far = np.zeros(count, np.int16)
        filled = 0
        with self._queue_lock:
            while filled < count and self._queue:
                head = self._queue[0]
                take = min(head.size, count - filled)
                far[filled : filled + take] = head[:take]
                if take == head.size:
                    self._queue.popleft()
                else:
                    self._queue[0] = head[take:]
                self._queued -= take
                filled += take
            self.render_missing += count - filled
            self._watch_standing_backlog(count)
        return far

    def _watch_standing_backlog(self, taken: int) -> None:
        """Cut a backlog that did not drain for :data:`STANDING_WINDOW_S` (lock held).

        Bursts come and go; a backlog that stays (the speaker's clock faster than the
        microphone's, a burst at start) delays the render the canceller sees by as much, and
        would reach :data:`MAX_BACKLOG_MS` in the end. What stands beyond
        :data:`STANDING_TOLERANCE` is dropped at once (oldest samples first), which AEC3 sees as
        a jump of the echo path by as much: a few samples a second for clock drift.
        """
        if self._window_taken == 0:
            self._window_min = self._queued
        self._window_min = min(self._window_min, self._queued)
        self._window_taken += taken
        if self._window_taken >= STANDING_WINDOW_S * SAMPLE_RATE:
            if self._window_min > STANDING_TOLERANCE:
                self._drop(self._window_min - STANDING_TOLERANCE)
            self._window_taken = 0

    def _drop(self, count: int) -> None:
        """Drop the ``count`` oldest queued samples (lock held)."""
        while count > 0 and self._queue:
            head = self._queue[0]
            cut = min(head.size, count)
            if cut == head.size:
                self._queue.popleft()
            else:
                self._queue[0] = head[cut:]
            self._queued -= cut
            self.render_dropped += cut
            count -= cut
