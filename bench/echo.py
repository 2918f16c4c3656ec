"""Echo cancellers on a simulated classroom: ERLE, near-end voice kept, CPU per 10 ms frame.

``python -m bench.echo`` prints one table row per canceller and echo delay. The acoustic path is
built here (there is no sound card on the dev VM): two speech-like voices (harmonics of a
gliding pitch, shaped by formants, cut into syllables, with breath noise), the far end (the
remote pupil, what the kit plays) and the near end (the teacher in the room). The microphone
hears the near end plus the far end delayed by 20–80 ms, attenuated, filtered by a small
loudspeaker (high-pass) and a room (a decaying reflection tail), plus microphone noise.

Playback and capture are two device threads handing over 20 ms blocks with a phase offset
between them; :func:`run` interleaves the ``played``/``captured`` calls in that order.

The timeline (:data:`SEGMENTS`): far end only (the canceller converges, then ERLE is measured),
near end only (how much of the teacher's voice survives), double talk (both at once: the near
end must survive and the echo stay down), far end only again (no divergence after double talk).

Also compared: speexdsp (``libspeexdsp1``) through a ctypes binding kept here, with its
residual-echo suppressor (``speex_preprocess``) as its docs recommend.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

RATE = 48_000
FRAME = RATE // 100
BLOCK = 2 * FRAME  # the sources' 20 ms blocks
FULL_SCALE = 32767.0

SEGMENTS: dict[str, tuple[float, float]] = {
    "converge": (0.0, 3.0),
    "first_second": (0.0, 1.0),
    "far": (3.0, 5.0),
    "near": (5.0, 7.5),
    "double": (7.5, 10.5),
    "far_after": (10.5, 13.0),
}
"""Seconds; the far end talks in all but ``near``, the near end in ``near`` and ``double``."""
DURATION = 13.0
RECOVERY = 0.5
"""Seconds after double talk left out of the second ERLE measure (AEC3 measured: ≈ 0.5 s)."""
DOUBLE_TALK_SETTLE = 0.5
"""Seconds at the start of double talk left out of its measurement (the suppressor's reaction)."""


class Canceller(Protocol):
    def played(self, samples: np.ndarray) -> None: ...

    def captured(self, samples: np.ndarray) -> np.ndarray: ...


# -- signals ---------------------------------------------------------------------------------


def voice(seconds: float, seed: int, f0: float, formants: Sequence[float]) -> np.ndarray:
    """A speech-like float signal (peak ≈ 1): a gliding pitch's harmonics up to 7 kHz, shaped by
    formant peaks, cut into 120–320 ms syllables with 40–160 ms gaps, plus breath noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    glide = (
        1
        + 0.08 * np.sin(2 * np.pi * 0.6 * t + rng.uniform(0, 6))
        + 0.03 * np.sin(2 * np.pi * 3.3 * t + rng.uniform(0, 6))
    )
    phase = 2 * np.pi * np.cumsum(f0 * glide) / RATE
    signal = np.zeros(n)
    for k in range(1, int(7000 / f0) + 1):
        freq = k * f0
        weight = sum(np.exp(-(((freq - f) / (0.12 * f + 60)) ** 2)) for f in formants)
        signal += (0.15 + 3 * weight) / k**0.7 * np.sin(k * phase + rng.uniform(0, 6))
    breath = fft_convolve(rng.standard_normal(n), _lowpass(4000.0))  # little above 8 kHz
    signal += 0.1 * breath * np.std(signal) / np.std(breath)
    signal *= _syllables(n, rng)
    peak = float(np.max(np.abs(signal)))
    return signal / peak


def _syllables(n: int, rng: np.random.Generator) -> np.ndarray:
    envelope = np.zeros(n)
    at = 0
    while at < n:
        length = int(rng.uniform(0.12, 0.32) * RATE)
        shape = np.sin(np.pi * np.arange(length) / length) ** 0.6 * rng.uniform(0.5, 1.0)
        end = min(n, at + length)
        envelope[at:end] = shape[: end - at]
        at = end + int(rng.uniform(0.04, 0.16) * RATE)
    return envelope


def fft_convolve(signal: np.ndarray, response: np.ndarray) -> np.ndarray:
    size = 1 << int(np.ceil(np.log2(signal.size + response.size)))
    out = np.fft.irfft(np.fft.rfft(signal, size) * np.fft.rfft(response, size), size)
    return out[: signal.size]


@dataclass(frozen=True)
class EchoPath:
    """Loudspeaker → room → microphone: delay, gain, a high-pass speaker, a reflection tail."""

    delay_ms: float = 50.0
    gain_db: float = -6.0
    tail_ms: float = 60.0
    tail_db: float = -12.0
    """Energy of the reflections relative to the direct sound."""
    jump_ms: float = 0.0
    """The delay grows by this much when the far end resumes after double talk (a playback
    underrun, or an HDMI sink changing its buffering)."""
    drift_ppm: float = 0.0
    """The speaker's clock runs this much faster than the microphone's (two USB devices)."""
    drive: float = 0.0
    """Loudspeaker saturation: the far end goes through ``tanh(drive·x)/drive`` (0: linear)."""
    seed: int = 7

    def response(self) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        delay = int(self.delay_ms * RATE / 1000)
        tail = int(self.tail_ms * RATE / 1000)
        h = np.zeros(delay + tail + SPEAKER_HALF + 1)
        h[delay] = 1.0
        decay = np.exp(-np.arange(tail) / (tail / 5)) * rng.standard_normal(tail)
        decay *= np.sqrt(10 ** (self.tail_db / 10) / np.sum(decay**2))
        h[delay + 1 : delay + 1 + tail] += decay
        # the loudspeaker: no bass below ~150 Hz (h minus its zero-phase low-passed self) and a
        # gentle treble roll-off
        h = h - np.convolve(h, _lowpass(150.0), mode="same")
        h = np.convolve(h, [0.25, 0.5, 0.25], mode="same")
        return 10 ** (self.gain_db / 20) * h


SPEAKER_HALF = RATE // 100
"""Half the length of the loudspeaker's zero-phase filter (10 ms): shorter than any delay."""


def _lowpass(cutoff: float) -> np.ndarray:
    """A zero-phase windowed-sinc low-pass of ``2·SPEAKER_HALF + 1`` taps."""
    n = np.arange(-SPEAKER_HALF, SPEAKER_HALF + 1)
    kernel: np.ndarray = np.sinc(2 * cutoff / RATE * n) * np.hanning(n.size)
    kernel /= float(kernel.sum())
    return kernel


@dataclass
class Scene:
    far: np.ndarray
    """int16, what the kit plays."""
    near: np.ndarray
    """float, the near end's voice as it reaches the microphone (the reference for 'kept')."""
    echo: np.ndarray
    """float, the echo alone at the microphone."""
    mic: np.ndarray
    """int16, the microphone: near + echo + noise."""


def _mask(n: int, names: Sequence[str]) -> np.ndarray:
    mask = np.zeros(n, bool)
    for name in names:
        start, end = SEGMENTS[name]
        mask[int(start * RATE) : int(end * RATE)] = True
    return mask


def scene(
    path: EchoPath, far_dbfs: float = -20.0, near_dbfs: float = -26.0, noise_dbfs: float = -70.0
) -> Scene:
    """The microphone's input over :data:`SEGMENTS` (levels are RMS of the active speech)."""
    n = int(DURATION * RATE)
    far = voice(DURATION, seed=1, f0=210.0, formants=(750, 1200, 2600)) * _mask(
        n, ("converge", "far", "double", "far_after")
    )
    near = voice(DURATION, seed=2, f0=120.0, formants=(500, 1500, 2500)) * _mask(
        n, ("near", "double")
    )
    far_i16 = np.round(_scale(far, far_dbfs) * FULL_SCALE).astype(np.int16)
    near_f = _scale(near, near_dbfs) * FULL_SCALE
    echo = _echo(far_i16.astype(np.float64), path)
    noise = np.random.default_rng(3).standard_normal(n) * 10 ** (noise_dbfs / 20) * FULL_SCALE
    mic = np.clip(np.round(near_f + echo + noise), -32768, 32767).astype(np.int16)
    return Scene(far_i16, near_f, echo, mic)


def _echo(far: np.ndarray, path: EchoPath) -> np.ndarray:
    sound = far
    if path.drive:
        x = far / FULL_SCALE
        sound = np.tanh(path.drive * x) / path.drive * FULL_SCALE
    if path.drift_ppm:  # the speaker plays sample i at microphone time i / (1 + drift)
        t = np.arange(far.size) * (1 + path.drift_ppm * 1e-6)
        sound = np.interp(t, np.arange(far.size), sound)
    echo = fft_convolve(sound, path.response())
    if path.jump_ms:
        at = int(SEGMENTS["far_after"][0] * RATE)
        jumped = EchoPath(path.delay_ms + path.jump_ms, path.gain_db, path.tail_ms, path.tail_db)
        echo[at:] = fft_convolve(sound, jumped.response())[at:]
    return echo


def _scale(signal: np.ndarray, dbfs: float) -> np.ndarray:
    active = signal[np.abs(signal) > 1e-3]
    rms = float(np.sqrt(np.mean(active**2)))
    return signal * (10 ** (dbfs / 20) / rms)


# -- running a canceller ---------------------------------------------------------------------


@dataclass
class Run:
    out: np.ndarray
    cpu_us: list[float]
    """Thread CPU time of each ``captured`` call, per 10 ms frame, in microseconds."""


def run(canceller: Canceller, sc: Scene, playback_lead_ms: float = 7.0) -> Run:
    """Feed the scene block by block: the playback thread's block ``k`` is handed over at
    ``k·20 ms − lead``, the capture thread's block ``k`` when it is complete at ``(k+1)·20 ms``
    (the echo path's delay already holds the acoustic delay and the buffering)."""
    blocks = sc.mic.size // BLOCK
    events = [((k * 20.0) - playback_lead_ms, 0, k) for k in range(blocks)]
    events += [((k + 1) * 20.0, 1, k) for k in range(blocks)]
    out = np.zeros(blocks * BLOCK, np.int16)
    cpu: list[float] = []
    for _, kind, k in sorted(events):
        span = slice(k * BLOCK, (k + 1) * BLOCK)
        if kind == 0:
            canceller.played(sc.far[span])
            continue
        start = time.thread_time_ns()
        out[span] = canceller.captured(sc.mic[span])
        cpu.append((time.thread_time_ns() - start) / 1000 / (BLOCK // FRAME))
    return Run(out, cpu)


# -- measures --------------------------------------------------------------------------------


def _span(name: str, skip: float = 0.0) -> slice:
    start, end = SEGMENTS[name]
    return slice(int((start + skip) * RATE), int(end * RATE))


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x.astype(np.float64)))) + 1e-9


def erle_db(sc: Scene, out: np.ndarray, segment: str = "far", skip: float = 0.0) -> float:
    """Echo return loss enhancement: microphone power over output power, far end only."""
    start, end = SEGMENTS[segment]
    return erle_between(sc.mic, out, start + skip, end)


def erle_between(mic: np.ndarray, out: np.ndarray, start: float, end: float) -> float:
    """ERLE in dB between two times in seconds (the far end alone must be talking then)."""
    span = slice(int(start * RATE), int(end * RATE))
    return float(10 * np.log10(_power(mic[span]) / _power(out[span])))


MAX_LAG = RATE // 40
"""The longest processing delay :func:`output_lag` looks for (25 ms)."""


def output_lag(sc: Scene, out: np.ndarray) -> int:
    """Samples by which the canceller delays the near end (AEC3's band split adds ≈ 9 ms):
    the peak of the cross-correlation of output and clean near end over the near-end segment."""
    span = _span("near")
    ref = sc.near[span]
    got = out[span.start : span.stop + MAX_LAG].astype(np.float64)
    scores = [float(np.dot(got[lag : lag + ref.size], ref)) for lag in range(MAX_LAG)]
    return int(np.argmax(scores))


def near_kept(
    sc: Scene, out: np.ndarray, lag: int, segment: str = "near", skip: float = 0.0
) -> tuple[float, float]:
    """How much of the near end's voice is in the output: (level change in dB, SNR in dB).

    The output (``lag`` samples later) is projected on the clean near end (least squares gain
    ``g``): ``20·log10 g`` is the level change, and the SNR compares ``g·near`` with everything
    else in the output (distortion, residual echo, noise).
    """
    ref, got = _aligned(sc, out, lag, segment, skip)
    g = float(np.dot(got, ref) / np.dot(ref, ref))
    rest = got - g * ref
    return float(20 * np.log10(max(g, 1e-6))), float(10 * np.log10(_power(g * ref) / _power(rest)))


def _aligned(
    sc: Scene, out: np.ndarray, lag: int, segment: str, skip: float
) -> tuple[np.ndarray, np.ndarray]:
    span = _span(segment, skip)
    return sc.near[span], out[span.start + lag : span.stop + lag].astype(np.float64)


def echo_in_double_talk_db(sc: Scene, out: np.ndarray, lag: int) -> float:
    """Echo left during double talk, relative to the echo at the microphone (dB, lower is better):
    the output minus its near-end part, over the echo alone."""
    ref, got = _aligned(sc, out, lag, "double", DOUBLE_TALK_SETTLE)
    g = float(np.dot(got, ref) / np.dot(ref, ref))
    echo = sc.echo[_span("double", DOUBLE_TALK_SETTLE)]
    return float(10 * np.log10(_power(got - g * ref) / _power(echo)))


@dataclass
class Measure:
    name: str
    scenario: str
    erle_start: float
    erle: float
    erle_after: float
    near_level: float
    near_snr: float
    double_level: float
    double_snr: float
    double_echo: float
    latency_ms: float
    cpu_median_us: float
    cpu_p95_us: float


def measure(
    name: str, make: Callable[[], Canceller], path: EchoPath, scenario: str = ""
) -> Measure:
    sc = scene(path)
    result = run(make(), sc)
    lag = output_lag(sc, result.out)
    near_level, near_snr = near_kept(sc, result.out, lag)
    dt_level, dt_snr = near_kept(sc, result.out, lag, "double", DOUBLE_TALK_SETTLE)
    cpu = sorted(result.cpu_us)
    return Measure(
        name,
        scenario or f"{path.delay_ms:.0f} ms",
        erle_db(sc, result.out, "first_second"),
        erle_db(sc, result.out),
        erle_db(sc, result.out, "far_after", RECOVERY),
        near_level,
        near_snr,
        dt_level,
        dt_snr,
        echo_in_double_talk_db(sc, result.out, lag),
        lag / RATE * 1000,
        statistics.median(cpu),
        cpu[int(0.95 * (len(cpu) - 1))],
    )


# -- speexdsp, for the comparison --------------------------------------------------------------

_SPEEX_ECHO_SET_SAMPLING_RATE = 24
_SPEEX_PREPROCESS_SET_ECHO_STATE = 24


class SpeexCanceller:
    """speexdsp's MDF canceller plus its residual-echo suppressor, through ctypes (bench only).

    The filter must span the echo path (speexdsp has no delay estimator): ``filter_ms`` covers
    the longest delay plus the reflections.
    """

    def __init__(self, filter_ms: int = 200) -> None:
        name = ctypes.util.find_library("speexdsp")
        if name is None:
            raise OSError("libspeexdsp not found (Debian: apt-get install libspeexdsp1)")
        lib = ctypes.CDLL(name)
        lib.speex_echo_state_init.restype = ctypes.c_void_p
        lib.speex_echo_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.speex_echo_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        lib.speex_echo_cancellation.argtypes = [ctypes.c_void_p] + [ctypes.c_void_p] * 3
        lib.speex_echo_state_destroy.argtypes = [ctypes.c_void_p]
        lib.speex_preprocess_state_init.restype = ctypes.c_void_p
        lib.speex_preprocess_state_init.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.speex_preprocess_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        lib.speex_preprocess_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.speex_preprocess_state_destroy.argtypes = [ctypes.c_void_p]
        self._lib = lib
        self._echo = lib.speex_echo_state_init(FRAME, filter_ms * RATE // 1000)
        rate = ctypes.c_int(RATE)
        lib.speex_echo_ctl(self._echo, _SPEEX_ECHO_SET_SAMPLING_RATE, ctypes.byref(rate))
        self._pre = lib.speex_preprocess_state_init(FRAME, RATE)
        lib.speex_preprocess_ctl(self._pre, _SPEEX_PREPROCESS_SET_ECHO_STATE, self._echo)
        self._far: list[np.ndarray] = []

    def played(self, samples: np.ndarray) -> None:
        self._far.append(samples.copy())

    def captured(self, samples: np.ndarray) -> np.ndarray:
        far = np.concatenate(self._far) if self._far else np.zeros(0, np.int16)
        head, rest = far[: samples.size], far[samples.size :]
        self._far = [rest] if rest.size else []
        far = np.concatenate([head, np.zeros(samples.size - head.size, np.int16)])
        out = np.empty_like(samples)
        for i in range(0, samples.size, FRAME):
            near_f = np.ascontiguousarray(samples[i : i + FRAME])
            far_f = np.ascontiguousarray(far[i : i + FRAME])
            out_f = np.empty(FRAME, np.int16)
            self._lib.speex_echo_cancellation(
                self._echo, near_f.ctypes.data, far_f.ctypes.data, out_f.ctypes.data
            )
            self._lib.speex_preprocess_run(self._pre, out_f.ctypes.data)
            out[i : i + FRAME] = out_f
        return out

    def __del__(self) -> None:
        lib: Any = getattr(self, "_lib", None)
        if lib is not None:
            lib.speex_echo_state_destroy(self._echo)
            lib.speex_preprocess_state_destroy(self._pre)


# -- command line ----------------------------------------------------------------------------


def _cancellers() -> dict[str, Callable[[], Canceller]]:
    from agent.media.echo import EchoCanceller

    return {"webrtc-aec3": EchoCanceller, "speexdsp": SpeexCanceller}


SCENARIOS: dict[str, EchoPath] = {
    "20 ms": EchoPath(delay_ms=20),
    "50 ms": EchoPath(delay_ms=50),
    "80 ms": EchoPath(delay_ms=80),
    "150 ms (a TV's HDMI speakers)": EchoPath(delay_ms=150),
    "50 ms, then +30 ms after double talk": EchoPath(delay_ms=50, jump_ms=30),
    "50 ms, speaker clock +100 ppm": EchoPath(delay_ms=50, drift_ppm=100),
    "50 ms, saturating speaker": EchoPath(delay_ms=50, drive=3.0),
}

HEADER = (
    "| canceller | echo path | ERLE dB: first second / 3–5 s / after double talk"
    " | near end alone: level dB / SNR dB | double talk: near level dB / SNR dB, echo left dB"
    " | added latency ms | CPU µs per 10 ms (median / p95) |"
)


def row(m: Measure) -> str:
    return (
        f"| {m.name} | {m.scenario} | {m.erle_start:.1f} / {m.erle:.1f} / {m.erle_after:.1f} |"
        f" {m.near_level:+.1f} / {m.near_snr:.1f} |"
        f" {m.double_level:+.1f} / {m.double_snr:.1f}, {m.double_echo:.1f} | {m.latency_ms:.1f} |"
        f" {m.cpu_median_us:.0f} / {m.cpu_p95_us:.0f} |"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", default="", help="one canceller: webrtc-aec3 or speexdsp")
    parser.add_argument("--scenario", default="", help="scenarios whose name contains this")
    args = parser.parse_args(argv)
    print(HEADER)
    print("|---" * 7 + "|")
    for name, make in _cancellers().items():
        if args.only and name != args.only:
            continue
        for scenario, path in SCENARIOS.items():
            if args.scenario not in scenario:
                continue
            try:
                print(row(measure(name, make, path, scenario)), flush=True)
            except OSError as exc:
                print(f"| {name} | unavailable: {exc} |")
                break


if __name__ == "__main__":
    main()
