"""Talk-back: a pupil who speaks (aiortc, clock-coded tone), and what it costs the kit.

``python -m bench.talkback``: the agent (its own process, speaker ``null``) with 30 receiving
pupils (bench.receivers, other processes) and CPU sampled; then the same with one more pupil
who has the floor and sends its voice: the difference is what talk-back costs (decode, jitter
buffer, mix, the speaker thread, the echo canceller, the mix-minus Opus encoder), quoted
against the 30-pupil budget of ``make bench`` (one core).

The speaking pupil (:class:`TalkingPupil`) is what tests/agent/webrtc/test_talkback_e2e.py uses
too: a WHEP offer whose audio m-line is ``sendrecv`` with a :class:`VoiceTrack`, whose bursts are
clock-coded: burst *k* starts at a known monotonic time and is a tone of
``CODE_HZ[k % len(CODE_HZ)]``, so a listener that hears a burst knows which one it is
(unambiguous for ``len(CODE_HZ) × BURST_PERIOD_S`` = 2.4 s) and the latency is its onset time
minus the time the pupil's track handed over the frame.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .whep_receiver import WhepReceiver

RATE = 48_000
FRAME = 960
BURST_PERIOD_S = 0.4
BURST_S = 0.12
CODE_HZ = (600.0, 800.0, 1200.0, 1400.0, 1600.0, 1800.0)
"""A burst's tone: its number modulo 6. 200 Hz apart (50 Hz bins on a 20 ms window), away from
the synthetic room microphone's 440 Hz tone and 1 kHz beep."""
VOICE_AMPLITUDE = 0.25 * 32767
"""−12 dBFS: a pupil speaking close to a laptop's microphone."""
TIME_BASE = fractions.Fraction(1, RATE)


class VoiceTrack(MediaStreamTrack):
    """A pupil's microphone: clock-coded tone bursts, 20 ms frames paced in real time.

    ``onsets``: (burst number, monotonic time the frame holding its first sample was handed to
    the sender + the sample's offset in it)."""

    kind = "audio"

    def __init__(self, amplitude: float = VOICE_AMPLITUDE, noise: bool = False) -> None:
        super().__init__()
        self.amplitude = amplitude
        self.noise = noise
        """Bursts of noise (same power) instead of tones: broadband like speech, which is what an
        echo canceller's delay estimator is made for (a pure tone's correlation repeats every
        period: AEC3 lost the path for a second now and then on the tones, 7–15 dB in that
        second, 40–48 dB around it)."""
        self.onsets: list[tuple[int, float]] = []
        self._sample = 0
        self._start: float | None = None

    def samples(self, first: int, count: int = FRAME) -> np.ndarray:
        """The signal from sample ``first`` (pure: the tests use it as the reference)."""
        n = np.arange(first, first + count)
        period = int(BURST_PERIOD_S * RATE)
        burst, pos = np.divmod(n, period)
        on = pos < int(BURST_S * RATE)
        if self.noise:
            rng = np.random.default_rng(first)
            tone = self.amplitude / np.sqrt(2) * rng.standard_normal(count)
        else:
            freq = np.asarray(CODE_HZ)[burst % len(CODE_HZ)]
            tone = self.amplitude * np.sin(2 * np.pi * freq * pos / RATE)
        return np.clip(np.where(on, tone, 0.0), -32768, 32767).astype(np.int16)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._sample / RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        first = self._sample
        self._sample += FRAME
        handed = time.monotonic()
        period = int(BURST_PERIOD_S * RATE)
        onset = -(-first // period) * period  # the next burst start at or after ``first``
        if onset < first + FRAME:
            self.onsets.append((onset // period, handed + (onset - first) / RATE))
        mono = self.samples(first)
        # Stereo with both channels equal, as aiortc's Opus encoder takes: given mono, its
        # resampler would spread it over the two channels 3 dB down (FFmpeg's centre mix level).
        frame = av.AudioFrame.from_ndarray(
            np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = RATE
        frame.pts = first
        frame.time_base = TIME_BASE
        return frame


@dataclass
class Heard:
    """What a listener (the kit's speaker tap, or a pupil) got: mono int16 and arrival times."""

    blocks: list[np.ndarray] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    """Monotonic time of each block's first sample (played, or received)."""

    def add(self, samples: np.ndarray, when: float) -> None:
        self.blocks.append(np.asarray(samples, np.int16).copy())
        self.times.append(when)

    def signal(self) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.zeros(0, np.int16)


def band_level_db(
    samples: np.ndarray, freqs: tuple[float, ...] = CODE_HZ, exclude: bool = False
) -> float:
    """Power (dBFS) of ``samples`` in ±25 Hz around ``freqs`` (a Hann-windowed FFT); with
    ``exclude``, everywhere from 100 Hz to 16 kHz but there."""
    if samples.size < FRAME:
        return -120.0
    x = samples.astype(np.float64) / 32768.0
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size))) ** 2
    bins = np.fft.rfftfreq(x.size, 1 / RATE)
    mask = np.zeros(bins.size, bool)
    for f in freqs:
        mask |= np.abs(bins - f) <= 25
    if exclude:
        mask = ~mask & (bins >= 100) & (bins <= 16_000)
    power = spectrum[mask].sum() * 4 / (np.hanning(x.size) ** 2).sum() / x.size * 2
    return float(10 * np.log10(max(power, 1e-12)))


def onsets_heard(
    heard: Heard, threshold: float = 0.25 * VOICE_AMPLITUDE
) -> list[tuple[int, float]]:
    """(code, monotonic time) of every burst onset in ``heard``: the first sample above
    ``threshold`` after 60 ms below it; the code is the strongest tone of the next 20 ms."""
    if not heard.blocks:
        return []
    signal = heard.signal()
    times = np.concatenate(
        [when + np.arange(b.size) / RATE for b, when in zip(heard.blocks, heard.times, strict=True)]
    )
    loud = np.flatnonzero(np.abs(signal.astype(np.int32)) > threshold)
    if loud.size == 0:
        return []
    gaps = np.diff(loud, prepend=-RATE)
    out = []
    for index in loud[gaps >= int(0.06 * RATE)]:
        window = signal[index : index + FRAME]
        if window.size < FRAME:
            continue
        levels = [band_level_db(window, (f,)) for f in CODE_HZ]
        out.append((int(np.argmax(levels)), float(times[index])))
    return out


def latencies_ms(sent: list[tuple[int, float]], heard: list[tuple[int, float]]) -> list[float]:
    """Each heard onset against the latest sent burst of the same code before it."""
    out = []
    for code, at in heard:
        candidates = [t for k, t in sent if k % len(CODE_HZ) == code and t <= at]
        if candidates:
            out.append((at - max(candidates)) * 1000)
    return out


class TalkingPupil(WhepReceiver):
    """A pupil whose page can speak: audio m-line ``sendrecv`` with a :class:`VoiceTrack` (or
    none: ``voice=None`` offers sendrecv without a track, as the page does before the floor).
    What it receives of the room's sound is kept in :attr:`heard`. ``video=False`` (default)
    offers the sound only: decoding two H.264 streams per pupil in the process that also runs
    the kit (the tests) or beside it (the bench) would only add load to a 2-core machine; what
    the kit sends a viewer's video costs is measured by ``make bench``."""

    def __init__(
        self, whep_url: str, voice: VoiceTrack | None, video: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(whep_url, **kwargs)
        self.voice = voice
        self.video = video
        self.heard = Heard()

    def _add_transceivers(self) -> None:
        """Both cameras receive-only (unless ``video`` is off), the sound send-and-receive."""
        for _ in range(2 if self.video else 0):
            self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver(self.voice or "audio", direction="sendrecv")

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind != "audio":
            super()._on_track(track)
            return
        self._tasks.append(asyncio.ensure_future(self._listen(track)))

    async def _listen(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            assert isinstance(frame, av.AudioFrame)
            frame.pts = None
            for out in resampler.resample(frame):
                self.heard.add(out.to_ndarray().reshape(-1), now)


# -- the benchmark -------------------------------------------------------------------------------

WARMUP_S = 5.0
MEASURE_S = 12.0


async def _floor(base_url: str, viewer_id: str, on: bool) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{base_url}/api/pupils/{viewer_id}/floor", json={"floor": on}) as response,
    ):
        response.raise_for_status()


async def run() -> dict[str, Any]:
    from agent.webrtc.ice import restrict_host_addresses

    from .processes import AgentProcess, collect_receivers, sample_cpu, start_receivers

    restrict_host_addresses(["127.0.0.1"])
    out: dict[str, Any] = {}
    with AgentProcess('[speaker]\ndevice = "null"\n') as agent:
        whep = await agent.start_class()
        await asyncio.sleep(2)
        procs = start_receivers(whep, 30, WARMUP_S, 2 * MEASURE_S + 8)
        await asyncio.sleep(WARMUP_S + 1.5)
        out["30"] = await asyncio.to_thread(sample_cpu, agent.pid, MEASURE_S - 2)
        voice = VoiceTrack()
        pupil = TalkingPupil(whep, voice)
        await pupil.connect()
        await asyncio.sleep(2)
        status = await agent.status()
        viewer_id = next(v["id"] for v in status["viewers"] if v.get("can_speak"))
        await _floor(agent.base_url, viewer_id, True)
        await asyncio.sleep(2)
        out["30+voice"] = await asyncio.to_thread(sample_cpu, agent.pid, MEASURE_S - 2)
        status = await agent.status()
        out["viewer"] = next(v for v in status["viewers"] if v["id"] == viewer_id)
        await pupil.close()
        viewers = await collect_receivers(procs)
        out["min_audio_kbps"] = min(
            (v["microphone"]["kbps"] if "microphone" in v else 0.0) for v in viewers
        )
    return out


def lines(out: dict[str, Any]) -> list[str]:
    base, voice = out["30"], out["30+voice"]
    return [
        f"- talk-back (noisy when the machine is shared): 30 pupils {base.cpu_percent} % of one "
        f"core, with one more pupil speaking {voice.cpu_percent} % "
        f"(+{voice.cpu_percent - base.cpu_percent:.1f} %); RSS {voice.rss_mb} MB",
    ]


def check_rows(out: dict[str, Any]) -> list[tuple[str, str, bool]]:
    voice = out["30+voice"]
    return [
        (
            "30 pupils + one speaking pupil: agent CPU ≤ 100 % of one core (issue 17)",
            f"{voice.cpu_percent} %",
            voice.cpu_percent <= 100,
        )
    ]


def main() -> int:
    argparse.ArgumentParser(prog="python -m bench.talkback", description=__doc__).parse_args()
    out = asyncio.run(run())
    for line in lines(out):
        print(line)
    for name, value, ok in check_rows(out):
        print(f"{name}: {value} {'PASS' if ok else 'FAIL'}")
    print(
        "viewer:", {k: out["viewer"].get(k) for k in ("floor", "voice_frames", "voice_discarded")}
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
