"""Talk-back end to end with real aiortc pupils (docs/talkback.md, "The media path").

A speaking pupil (bench.talkback.TalkingPupil) offers a ``sendrecv`` audio m-line whose track
sends clock-coded tone bursts; the kit's speaker is the ``null`` device and the test taps it at
the write boundary (``Speaker.tap``: each block and the time its first sample leaves the device:
the write's return + the stream's reported output latency; ``null`` keeps one 20 ms block of
buffer, as a low-latency device does). Why there: this machine has no sound card and
``snd-aloop`` cannot load; ALSA's ``file`` plugin over the ``null`` PCM is not paced
(tests/agent/sources/test_speaker.py checks that device path for content), so a paced sink is
the only place a real-time latency can be read. A real device's own output latency is in the
speaker's status (``latency_ms``, PortAudio's ``latency="low"``).

The acoustic echo path is built at the source boundary: the room microphone (a test source in
place of the synthetic one) hears a near-end voice plus what the speaker played, delayed by
50 ms (+ 0–20 ms of phase between the two device threads) and 6 dB down.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from typing import Any

import numpy as np

from agent.clock import MediaClock
from agent.media.pipeline import MediaPipeline
from agent.sources.base import AudioSink, AudioSource, RawAudioBlock, SourceState, SourceStatus
from agent.webrtc.viewer import Viewer
from bench.talkback import (
    VOICE_AMPLITUDE,
    Heard,
    TalkingPupil,
    VoiceTrack,
    band_level_db,
    latencies_ms,
    onsets_heard,
)
from tests.conftest import AgentFactory, LiveAgent, until

RATE = 48_000
BLOCK = 960
VOICE_DBFS = band_level_db(VoiceTrack().samples(0, RATE * 2))
"""The band level of what the speaking pupil sends (−12 dBFS bursts, 30 % of the time)."""
OWN_VOICE_MAX_DB = -26.0
"""The speaking pupil's own voice may come back at most this far below what they sent.

Without an echo path the mix-minus leaves none (measured −35 dB: the Opus coding noise of the
room's tone); with the room's echo path (6 dB down) and the issue's 20 dB of echo return loss
enhancement it would come back 26 dB down. ITU-T G.131 asks for more at a 150 ms round trip
(≈ 40 dB of talker echo loudness rating), which AEC3's suppressor gives in practice (measured
below, printed); the threshold is the issue's guarantee, not the typical figure."""


async def _speaking_class(
    live: LiveAgent, voice: VoiceTrack | None = None
) -> tuple[TalkingPupil, TalkingPupil, VoiceTrack, Viewer, Viewer]:
    """One pupil who can speak (sending ``voice`` all along: clock-coded tones unless given)
    and one who listens (sendrecv without a track, like a page before the floor)."""
    whep = await live.start()
    voice = voice or VoiceTrack()
    speaking = TalkingPupil(whep, voice)
    listening = TalkingPupil(whep, None)
    live.receivers += [speaking, listening]
    await speaking.connect()
    await listening.connect()
    session = live.session
    await until(lambda: any(v.voice_frames > 10 for v in session.viewers.values()), 10, "voice")
    talker = next(v for v in session.viewers.values() if v.voice_frames > 0)
    other = next(v for v in session.viewers.values() if v is not talker)
    assert talker.can_speak and other.can_speak and not talker.has_floor
    return speaking, listening, voice, talker, other


def _tap(live: LiveAgent) -> Heard:
    pipeline = live.session.pipeline
    assert pipeline is not None and pipeline.talkback is not None
    heard = Heard()
    pipeline.talkback.speaker.tap = heard.add
    return heard


def _since(heard: Heard, start: float, end: float = float("inf")) -> np.ndarray:
    blocks = [b for b, t in zip(heard.blocks, heard.times, strict=True) if start <= t < end]
    return np.concatenate(blocks) if blocks else np.zeros(0, np.int16)


async def test_voice_reaches_the_speaker_and_the_class_not_the_speaker_themself(
    make_agent: AgentFactory,
) -> None:
    live = await make_agent()
    speaking, listening, voice, talker, other = await _speaking_class(live)
    assert other.voice_frames == 0  # sendrecv without a track: no RTP, as a page before the floor
    played = _tap(live)
    loop = asyncio.get_running_loop()

    # Without the floor: received and decoded, but never played nor mixed.
    await asyncio.sleep(1.5)
    assert talker.voice_discarded > 50
    assert int(np.abs(played.signal()).max(initial=0)) == 0
    assert band_level_db(listening.heard.signal()[-RATE:]) < VOICE_DBFS - 30

    talker.set_floor(True)
    talker.set_floor(True)  # idempotent
    given = loop.time()
    assert talker.has_floor
    await asyncio.sleep(8.0)  # 20 bursts
    talker.set_floor(False)
    taken = loop.time()
    await asyncio.sleep(1.5)

    onsets = onsets_heard(played)
    latency = latencies_ms(voice.onsets, onsets)
    p95 = float(np.percentile(latency, 95))
    print(f"pupil voice → speaker: p50 {np.median(latency):.0f} ms, p95 {p95:.0f} ms")
    assert len(latency) >= 16 and p95 <= 250
    # The other pupil hears the voice at the level it was sent (Opus, mixed with the room).
    heard_by_other = _since(listening.heard, given + 0.5, taken)
    assert band_level_db(heard_by_other) > VOICE_DBFS - 6  # −3 dB: gaps under load
    # The speaking pupil gets the room without their own voice (mix-minus).
    own = band_level_db(_since(speaking.heard, given + 0.5, taken))
    print(f"own voice back: {own - VOICE_DBFS:.1f} dB below what was sent")
    assert own < VOICE_DBFS + OWN_VOICE_MAX_DB
    # Floor taken back: nothing more is played or sent to the class.
    assert not talker.has_floor
    assert band_level_db(_since(played, taken + 0.3)) < -90
    assert band_level_db(_since(listening.heard, taken + 0.5)) < VOICE_DBFS - 30
    pipeline = live.session.pipeline
    assert pipeline is not None
    await until(lambda: not pipeline._minus, 3, "mix-minus encoder stopped")
    assert pipeline.speaker_status()["state"] == "ok"


async def test_a_pupil_without_the_floor_is_never_heard(make_agent: AgentFactory) -> None:
    """Two pupils send; only the one given the floor reaches the speaker and the class."""
    live = await make_agent()
    whep = await live.start()
    voices = [VoiceTrack(), VoiceTrack(amplitude=VOICE_AMPLITUDE / 8)]  # −18 dB: tell them apart
    pupils = [TalkingPupil(whep, v) for v in voices]
    live.receivers += pupils
    for pupil in pupils:
        await pupil.connect()
    session = live.session
    await until(lambda: sum(v.voice_frames > 10 for v in session.viewers.values()) == 2, 10)
    played = _tap(live)
    loud, quiet = sorted(session.viewers.values(), key=lambda v: v.created)  # joining order
    quiet.set_floor(True)
    await asyncio.sleep(3.0)
    level = band_level_db(played.signal()[RATE:])
    print(f"speaker band level {level:.1f} dBFS (floor holder {VOICE_DBFS - 18:.1f})")
    assert VOICE_DBFS - 21 < level < VOICE_DBFS - 15  # the quiet pupil's, not the loud one's
    assert loud.voice_discarded > 100 and not loud.has_floor
    assert max(np.abs(played.signal())) < VOICE_AMPLITUDE / 4


class RoomMicrophone(AudioSource):
    """The room's microphone with an acoustic path: a near-end voice (300 Hz, −20 dBFS, the
    first :data:`NEAR_ON_S` of every :data:`NEAR_PERIOD_S`) plus what the speaker played
    ``delay_ms`` earlier, ``loss_db`` down.

    Both ends keep a device's clock: the speaker tap gives each block's play time, and block *k*
    of this microphone holds the sound of ``[t0 + 20k ms, t0 + 20(k + 1) ms)``, delivered once
    that interval is over (late blocks are caught up, as a device's buffer would). So the echo
    path is a fixed delay in time, not in how the two threads happen to run."""

    id = "microphone"
    NEAR_HZ = 300.0
    NEAR_PERIOD_S = 4.0
    NEAR_ON_S = 1.5

    def __init__(self, delay_ms: int = 50, loss_db: float = 6.0) -> None:
        self._lock = threading.Lock()
        self._played: collections.deque[tuple[float, np.ndarray]] = collections.deque(maxlen=100)
        self._delay = delay_ms / 1000
        self._gain = 10 ** (-loss_db / 20)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.echo = Heard()
        """The echo component the microphone delivered, block by block (by capture time)."""
        self.near = Heard()
        self.t0 = 0.0

    def near_phase(self, when: float) -> float:
        """Seconds into the near end's period at ``when`` (it talks during the first 1.5 s)."""
        return (when - self.t0) % self.NEAR_PERIOD_S

    def played(self, block: np.ndarray, when: float) -> None:
        with self._lock:
            self._played.append((when, block.astype(np.float64) * self._gain))

    def _echo_at(self, start: float) -> np.ndarray:
        """What the microphone hears of the speaker over ``[start, start + 20 ms)``."""
        out = np.zeros(BLOCK)
        at = start - self._delay
        with self._lock:
            played = list(self._played)
        for when, block in played:
            offset = round((when - at) * RATE)  # where the block starts in ``out``
            lo, hi = max(0, offset), min(BLOCK, offset + block.size)
            if lo < hi:
                out[lo:hi] = block[lo - offset : hi - offset]
        return out

    def start(self, sink: AudioSink, clock: MediaClock) -> None:
        def run() -> None:
            t0 = self.t0 = time.monotonic()
            k = 0
            while not self._stop.wait(max(0.0, t0 + (k + 1) * BLOCK / RATE - time.monotonic())):
                start = t0 + k * BLOCK / RATE
                echo = self._echo_at(start)
                n = np.arange(k * BLOCK, (k + 1) * BLOCK)
                near = 0.1 * 32767 * np.sin(2 * np.pi * self.NEAR_HZ * n / RATE)
                near *= self.near_phase(start) < self.NEAR_ON_S
                self.echo.add(echo.astype(np.int16), start)
                self.near.add(near.astype(np.int16), start)
                mixed = np.clip(np.round(echo + near), -32768, 32767).astype(np.int16)
                sink(RawAudioBlock(mixed, start))
                k += 1

        self._thread = threading.Thread(target=run, name="source-microphone", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def level_dbfs(self) -> float | None:
        return None

    def status(self) -> SourceStatus:
        return SourceStatus(self.id, self.kind, "room", SourceState.OK)


def _where(heard: Heard, start: float, end: float, keep: Any) -> np.ndarray:
    blocks = [
        b for b, t in zip(heard.blocks, heard.times, strict=True) if start <= t < end and keep(t)
    ]
    return np.concatenate(blocks) if blocks else np.zeros(0, np.int16)


def _voice_level(samples: np.ndarray) -> float:
    """The noise voice's level: 100 Hz–16 kHz except around the near end's 300 Hz."""
    return band_level_db(samples, (RoomMicrophone.NEAR_HZ,), exclude=True)


async def test_echo_cancelled_through_the_pipeline(make_agent: AgentFactory) -> None:
    """ERLE ≥ 20 dB at what the pupils get; the near end survives. The pupil's voice is
    broadband (noise bursts, bench.talkback.VoiceTrack ``noise``), like speech."""
    live = await make_agent()
    room = RoomMicrophone(delay_ms=50, loss_db=6.0)

    def pipeline(config: Any, clock: MediaClock, loop: asyncio.AbstractEventLoop) -> MediaPipeline:
        return MediaPipeline(config, clock, loop, make_audio=lambda cfg: room)

    live.session._pipeline_factory = pipeline
    voice = VoiceTrack(noise=True)
    speaking, listening, _voice, talker, _other = await _speaking_class(live, voice)
    sent_db = _voice_level(voice.samples(0, RATE * 2))
    pipe = live.session.pipeline
    assert pipe is not None and pipe.talkback is not None and pipe.talkback.echo is not None
    pipe.talkback.speaker.tap = room.played
    talker.set_floor(True)
    await asyncio.sleep(10.0)
    loop = asyncio.get_running_loop()
    end = loop.time()
    start = end - 8.0  # from 2 s after the floor was given: AEC3 has found the path

    # ERLE where only the pupil talks (0.3 s margins for the way to the pupils); the near end
    # where both talk (double talk: the voice goes on).
    def far_only(when: float) -> bool:
        return room.NEAR_ON_S + 0.3 < room.near_phase(when) < room.NEAR_PERIOD_S - 0.1

    def near_on(when: float) -> bool:
        return 0.3 < room.near_phase(when) < room.NEAR_ON_S

    echo_at_mic = _voice_level(_where(room.echo, start, end, far_only))
    echo_left = _voice_level(_where(speaking.heard, start, end, far_only))
    erle = echo_at_mic - echo_left
    near_sent = band_level_db(_where(room.near, start, end, near_on), (RoomMicrophone.NEAR_HZ,))
    heard = _where(listening.heard, start, end, near_on)
    near_heard = band_level_db(heard, (RoomMicrophone.NEAR_HZ,))
    print(
        f"echo at the microphone {echo_at_mic:.1f} dBFS, left {echo_left:.1f}: ERLE {erle:.1f} "
        f"dB; near end {near_sent:.1f} → {near_heard:.1f} dBFS; own voice back "
        f"{echo_left - sent_db:.1f} dB"
    )
    assert echo_at_mic > sent_db - 12  # the path is there: 6 dB down (+ gaps under load)
    assert erle >= 20
    assert echo_left < sent_db + OWN_VOICE_MAX_DB
    assert near_heard > near_sent - 6  # AEC3 ducks the near end in double talk, not more
    talker.set_floor(False)
    # The canceller runs only with the floor (+1 s of tail): the room then passes untouched.
    echo = pipe.talkback.echo
    await asyncio.sleep(1.5)
    frames = echo.frames
    await asyncio.sleep(0.5)
    assert echo.frames == frames


async def test_a_missing_speaker_is_a_kiosk_problem_only_while_a_pupil_speaks(
    make_agent: AgentFactory,
) -> None:
    """``[speaker] device`` names a device this machine does not have (it has no sound card):
    no problem while nobody speaks; the plain-words problem while a pupil has the floor, whose
    voice still reaches the other pupils; gone when the floor is taken back."""
    live = await make_agent(speaker={"device": "Haut-parleur USB"})
    _speaking, listening, _voice, talker, _other = await _speaking_class(live)
    pipeline = live.session.pipeline
    assert pipeline is not None
    await until(lambda: pipeline.speaker_status()["state"] in ("missing", "error"), 5)
    assert (await live.status())["problems"] == []
    talker.set_floor(True)
    loop = asyncio.get_running_loop()
    given = loop.time()
    problems = (await live.status())["problems"]
    assert [p["code"] for p in problems] == ["speaker_unavailable"]
    assert "Haut-parleur USB" in problems[0]["detail"]
    await asyncio.sleep(2.0)
    assert band_level_db(_since(listening.heard, given + 0.5)) > VOICE_DBFS - 6
    talker.set_floor(False)
    assert (await live.status())["problems"] == []


async def test_without_talk_back_the_kit_answers_send_only(make_agent: AgentFactory) -> None:
    """``[speaker] device = ""``: a page offering to send gets a send-only answer (it then
    never sends), cannot be given the floor, and its sound would not be taken."""
    live = await make_agent(speaker={"device": ""})
    whep = await live.start()
    pupil = TalkingPupil(whep, VoiceTrack())
    live.receivers.append(pupil)
    await pupil.connect()
    answer = pupil.pc.remoteDescription.sdp
    audio = answer[answer.index("m=audio") :]
    assert "a=sendonly" in audio and "a=sendrecv" not in audio
    viewer = next(iter(live.session.viewers.values()))
    assert not viewer.can_speak
    viewer.set_floor(True)
    assert not viewer.has_floor
    await asyncio.sleep(1.0)
    assert viewer.voice_frames == 0
    assert live.session.pipeline is not None
    assert live.session.pipeline.speaker_status()["state"] == "off"


class HighVoice(VoiceTrack):
    """Noise bursts from 2.5 to 8 kHz only: apart from the tones (≤ 1.8 kHz) in the spectrum."""

    def samples(self, first: int, count: int = 960) -> np.ndarray:
        noise = super().samples(first, count).astype(np.float64)
        spectrum = np.fft.rfft(noise)
        bins = np.fft.rfftfreq(count, 1 / RATE)
        spectrum[(bins < 2500) | (bins > 8000)] = 0
        return np.round(np.fft.irfft(spectrum, count) * 2).astype(np.int16)


async def test_two_voices_each_hears_the_other_not_itself(make_agent: AgentFactory) -> None:
    """``floor_max = 2``: pupil A speaks in tones, pupil B in high noise; each gets the other's
    voice and not their own (one mix-minus encoder each); a third pupil hears both; closing A's
    connection releases its floor and its encoder."""
    live = await make_agent(kiosk={"floor_max": 2})
    whep = await live.start()
    tones, noise = VoiceTrack(), HighVoice(noise=True)
    a, b, c = TalkingPupil(whep, tones), TalkingPupil(whep, noise), TalkingPupil(whep, None)
    live.receivers += [a, b, c]
    for pupil in (a, b, c):
        await pupil.connect()
    session = live.session
    await until(lambda: sum(v.voice_frames > 10 for v in session.viewers.values()) == 2, 10)
    va, vb, _vc = sorted(session.viewers.values(), key=lambda v: v.created)
    va.set_floor(True)
    vb.set_floor(True)
    loop = asyncio.get_running_loop()
    given = loop.time()
    await asyncio.sleep(4.0)
    end = loop.time()

    def tone_db(pupil: TalkingPupil) -> float:
        return band_level_db(_since(pupil.heard, given + 0.5, end))

    def noise_db(pupil: TalkingPupil) -> float:
        return band_level_db(_since(pupil.heard, given + 0.5, end), (3000.0, 4000.0, 5000.0))

    sent_tones = VOICE_DBFS
    print(f"tones at A {tone_db(a):.1f}, B {tone_db(b):.1f}, C {tone_db(c):.1f} dBFS")
    print(f"noise at A {noise_db(a):.1f}, B {noise_db(b):.1f}, C {noise_db(c):.1f} dBFS")
    assert tone_db(a) < sent_tones - 30 and tone_db(b) > sent_tones - 6
    assert tone_db(c) > sent_tones - 6
    assert noise_db(b) < noise_db(a) - 25 and noise_db(b) < noise_db(c) - 25
    pipeline = session.pipeline
    assert pipeline is not None and pipeline.talkback is not None
    assert sorted(pipeline._minus) == sorted([va.id, vb.id])
    await a.close()
    await until(lambda: va.id not in session.viewers, 5, "A gone")
    assert pipeline.talkback.mixer.voices() == [vb.id]
    await until(lambda: va.id not in pipeline._minus, 3, "A's mix-minus encoder stopped")
