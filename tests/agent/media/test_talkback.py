"""Talk-back's pure parts (agent/media/talkback.py): jitter buffer, mixer, mix-minus, the floor's
gate on the echo canceller. Time is the ticks (each ``tick``/``pop`` is 20 ms) or injected."""

from __future__ import annotations

import av
import numpy as np
import pytest

from agent.media.echo import EchoCanceller
from agent.media.talkback import (
    BLOCK_SAMPLES,
    ECHO_TAIL_S,
    MAX_DEPTH_BLOCKS,
    PREFILL_BLOCKS,
    STANDING_WINDOW_BLOCKS,
    Downmix,
    RenderHistory,
    Talkback,
    TalkbackMixer,
    Timeline,
    VoiceBuffer,
    mix_for_pupils,
    saturating_sum,
)


def ramp(start: int, count: int = BLOCK_SAMPLES) -> np.ndarray:
    """Samples numbered from ``start`` (mod 30000), so order and losses show."""
    return (np.arange(start, start + count) % 30000).astype(np.int16)


def test_a_voice_starts_after_the_prefill_and_keeps_its_order() -> None:
    buffer = VoiceBuffer()
    assert buffer.pop() is None  # nothing yet: the tick plays silence
    buffer.push(ramp(0))
    assert buffer.pop() is None  # 20 ms queued: still priming (40 ms)
    buffer.push(ramp(960, 480))  # aiortc may hand over any size
    buffer.push(ramp(1440, 480))
    first, second = buffer.pop(), buffer.pop()
    assert first is not None and second is not None
    assert np.array_equal(np.concatenate([first, second]), ramp(0, 1920))


def test_a_voice_that_runs_dry_primes_again() -> None:
    buffer = VoiceBuffer()
    for i in range(PREFILL_BLOCKS):
        buffer.push(ramp(i * 960))
    assert buffer.pop() is not None and buffer.pop() is not None
    buffer.push(ramp(1920, 500))  # a late packet's partial block
    partial = buffer.pop()
    assert partial is not None and np.array_equal(partial[:500], ramp(1920, 500))
    assert not partial[500:].any()  # padded with silence
    assert buffer.underruns == 1
    buffer.push(ramp(0))
    assert buffer.pop() is None  # primes again before playing: no 20 ms stutter loop


def test_latency_cannot_creep_up() -> None:
    """A pupil's clock faster than the speaker's, or a burst after a network stall: the buffer
    never holds more than MAX_DEPTH_BLOCKS, and drops the oldest audio down to the prefill."""
    buffer = VoiceBuffer()
    for i in range(25):  # 500 ms arrive at once
        buffer.push(ramp(i * 960))
    assert buffer.queued <= MAX_DEPTH_BLOCKS * BLOCK_SAMPLES
    assert buffer.dropped == 25 * 960 - buffer.queued
    block = buffer.pop()
    assert block is not None
    assert block[0] == ramp(25 * 960 - buffer.queued - 960, 1)[0]  # the newest audio stays


def test_a_standing_backlog_is_cut_to_the_prefill() -> None:
    """Packets held up for 80 ms, then delivered together: the extra delay goes within a
    second instead of lasting the whole turn."""
    buffer = VoiceBuffer()
    n = 0
    for _ in range(PREFILL_BLOCKS + 4):  # the burst: 120 ms queued
        buffer.push(ramp(n * 960))
        n += 1
    depths = []
    for _ in range(STANDING_WINDOW_BLOCKS + 5):  # then one block in, one out, every 20 ms
        assert buffer.pop() is not None
        buffer.push(ramp(n * 960))
        n += 1
        depths.append(buffer.queued // 960)
    assert depths[0] == PREFILL_BLOCKS + 4
    assert depths[-1] == PREFILL_BLOCKS
    assert buffer.dropped == 4 * 960 and buffer.underruns == 0


def test_mixer_discards_voices_without_the_floor() -> None:
    mixer = TalkbackMixer()
    assert not mixer.push("v1", ramp(0))
    assert mixer.discarded == 960
    assert mixer.tick() is None  # nobody has the floor: nothing to play
    mixer.open("v1")
    for _ in range(PREFILL_BLOCKS):
        assert mixer.push("v1", np.full(960, 100, np.int16))
    assert not mixer.push("v2", ramp(0))
    block = mixer.tick()
    assert block is not None and (block == 100).all()
    mixer.close("v1")
    assert not mixer.push("v1", ramp(0)) and mixer.tick() is None


def test_two_voices_mix_and_each_is_sent_once() -> None:
    mixer = TalkbackMixer()
    mixer.open("a")
    mixer.open("b")
    for _ in range(PREFILL_BLOCKS):
        mixer.push("a", np.full(960, 20000, np.int16))
        mixer.push("b", np.full(960, 20000, np.int16))
    played = mixer.tick()
    assert played is not None and (played == 32767).all()  # saturated, not wrapped
    sends = mixer.take_send()
    assert set(sends) == {"a", "b"} and (sends["a"] == 20000).all()
    again = mixer.take_send()  # the speaker has not ticked since: silence, not a repeat
    assert not again["a"].any() and not again["b"].any()


def test_the_send_queue_is_bounded() -> None:
    mixer = TalkbackMixer(send_blocks=4)
    mixer.open("a")
    for i in range(MAX_DEPTH_BLOCKS):
        mixer.push("a", np.full(960, i + 1, np.int16))
    for _ in range(6):  # the microphone thread stalled for 120 ms
        mixer.tick()
    first = mixer.take_send()["a"]
    assert first[0] == 3  # the two oldest went; the latency stays ≤ 80 ms


def test_mix_minus() -> None:
    room = np.full(960, 1000, np.int16)
    voices = {"a": np.full(960, 10, np.int16), "b": np.full(960, 200, np.int16)}
    everyone, minus = mix_for_pupils(room, voices)
    assert (everyone == 1210).all()
    assert (minus["a"] == 1200).all() and (minus["b"] == 1010).all()
    assert (saturating_sum([np.full(960, -30000, np.int16)] * 2) == -32768).all()


def test_downmix_of_what_aiortc_decodes() -> None:
    """aiortc's Opus decoder gives s16 stereo 48 kHz; a 44.1 kHz mono frame is resampled."""
    left = ramp(0)
    stereo = np.stack([left, left // 2], axis=1).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
    frame.sample_rate = 48_000
    mono = Downmix()(frame)
    assert mono.dtype == np.int16 and mono.shape == (960,)
    expected = ((left.astype(np.int32) + left // 2) / 2).astype(np.int16)
    assert np.abs(mono.astype(np.int32) - expected).max() <= 1
    other = av.AudioFrame.from_ndarray(ramp(0, 882).reshape(1, -1), format="s16", layout="mono")
    other.sample_rate = 44_100
    resampler = Downmix()
    total = sum(resampler(other).size for _ in range(10))
    assert abs(total - 9600) <= 64  # 200 ms at 48 kHz, less what the resampler holds


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_floor_max_and_the_echo_canceller_gate() -> None:
    clock = Clock()
    echo = EchoCanceller()
    talkback = Talkback("null", floor_max=1, now=clock, echo=echo)  # thread not started
    room = ramp(0)
    assert talkback.room(room, False, clock.t) is room  # nobody speaks: the room passes untouched
    assert echo.frames == 0
    assert talkback.open("a") and talkback.open("a")
    assert not talkback.open("b")  # floor_max = 1
    assert talkback.room(room, False, clock.t) is not room and echo.frames == 2
    assert talkback.room(room, True, clock.t) is room  # a missing microphone's silence: untouched
    talkback.close("a")
    clock.t += ECHO_TAIL_S - 0.1
    talkback.room(room, False, clock.t)
    assert echo.frames == 4  # the room's echo of the last words is still cancelled
    clock.t += 0.2
    assert talkback.room(room, False, clock.t) is room and echo.frames == 4
    assert talkback.open("b")  # a new turn: the canceller starts afresh


@pytest.mark.parametrize("floor_max", [1, 2])
def test_floor_max_voices(floor_max: int) -> None:
    talkback = Talkback("null", floor_max=floor_max, echo=False)
    opened = [talkback.open(v) for v in ("a", "b", "c")]
    assert opened == [True] * floor_max + [False] * (3 - floor_max)
    assert talkback.echo is None


def test_the_render_is_paired_by_time_not_by_count() -> None:
    """The speaker's blocks come with their play times, a gap where the device ran dry; the
    microphone's capture times jitter: the render the canceller gets for a microphone block is
    what played over the same interval, sample for sample."""
    history = RenderHistory()
    capture = Timeline()
    t0 = 50.0
    for n in range(20):
        gap = 0.007 if n >= 10 else 0.0  # ran dry 7 ms before block 10
        history.write(ramp(n * 960), t0 + n * 0.02 + gap)
    start = capture.place(t0 + 0.1)
    assert np.array_equal(history.read(start), ramp(5 * 960))
    assert capture.place(t0 + 0.123) == start + 960  # 3 ms of wake-up jitter: contiguous
    block = history.read(capture.place(t0 + 0.2))  # 200–220 ms: 7 ms of the gap
    assert not block[:336].any() and block[336] == ramp(10 * 960, 1)[0]
    assert not history.read(round(t0 * 48_000) - 960).any()  # before anything played: silence
    assert not history.read(round((t0 + 1) * 48_000)).any()  # not played yet: silence


def test_a_timeline_reanchors_after_a_jump() -> None:
    timeline = Timeline()
    assert timeline.place(1.0) == 48_000
    assert timeline.place(1.0201) == 48_960  # jitter: contiguous
    assert timeline.place(1.5) == 72_000  # a stall of 460 ms: re-anchored
