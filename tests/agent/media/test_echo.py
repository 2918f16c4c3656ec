"""The echo canceller on a simulated classroom (bench/echo.py builds the acoustic path).

The microphone hears a near-end voice (the teacher) plus what the kit played (a remote pupil's
voice) delayed 20–80 ms (150 ms: a TV's HDMI speakers), attenuated 6 dB, through a loudspeaker
with no bass and a room with a 60 ms reflection tail, plus microphone noise at −70 dBFS. The echo
reaches the microphone at the teacher's level.

Thresholds, and why:

* ERLE ≥ 20 dB on far-end-only speech (the issue's figure): in the first second (talk-back
  starts abruptly when the floor is given), after convergence, and again 0.5 s after double
  talk (the filter did not diverge). AEC3 measures 28–33 dB here.
* Near end alone: level within 1 dB and SNR ≥ 12 dB (the output projected on the clean voice
  against everything else). AEC3 measures −0.2 dB and 18 dB; what is left is its fixed
  high-pass filter (it removes < 100 Hz, where this voice has nothing but the glide's phase)
  and is not heard. 12 dB SNR means a difference signal at a quarter of the voice's amplitude.
* Double talk (both talking, after 0.5 s): the near end keeps ≥ −6 dB of its level (AEC3:
  −3.5 dB; its suppressor ducks the mix a little) and the echo left in the output is at least
  6 dB below the echo at the microphone (AEC3: −9 dB). −6 dB halves the amplitude, and the
  teacher stays understandable over the pupil: "not destroyed".
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.errors import AgentError
from agent.media import echo
from agent.media.echo import FRAME_SAMPLES, EchoCanceller, EchoCancellerUnavailable
from bench.echo import (
    BLOCK,
    RATE,
    EchoPath,
    Scene,
    erle_between,
    erle_db,
    measure,
    row,
    scene,
)
from tests.portaudio import NEEDS_PORTAUDIO

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("delay_ms", [20, 50, 80, 150])
def test_erle_and_near_end_on_a_simulated_classroom(delay_ms: int) -> None:
    m = measure("webrtc-aec3", EchoCanceller, EchoPath(delay_ms=delay_ms))
    print(f"\n{row(m)}")
    assert m.erle_start >= 20 and m.erle >= 20 and m.erle_after >= 20
    assert -1.0 <= m.near_level <= 1.0 and m.near_snr >= 12
    assert m.double_level >= -6 and m.double_echo <= -6
    assert m.latency_ms <= 12  # AEC3's band split: 9 ms


def test_a_saturating_loudspeaker_still_gives_20_db() -> None:
    m = measure("webrtc-aec3", EchoCanceller, EchoPath(delay_ms=50, drive=3.0))
    print(f"\n{row(m)}")
    assert m.erle >= 20 and m.erle_after >= 20 and m.double_level >= -6


def test_echo_path_that_jumps_is_found_again() -> None:
    """The delay grows by 30 ms at 10.5 s (a playback underrun): 12 dB only in the first 0.5 s
    (measured), then the delay estimator has found the new path (28 dB in 11.75–12.25 s)."""
    sc = scene(EchoPath(delay_ms=50, jump_ms=30))
    out = _run(sc)
    before, after = erle_between(sc.mic, out, 3, 5), erle_between(sc.mic, out, 11.75, 12.25)
    print(f"\nERLE before the jump {before:.1f} dB, 1.25 s after it {after:.1f} dB")
    assert before >= 20 and after >= 20


def _run(sc: Scene) -> np.ndarray:
    canceller = EchoCanceller()
    out = np.zeros_like(sc.mic)
    for k in range(sc.mic.size // BLOCK):
        span = slice(k * BLOCK, (k + 1) * BLOCK)
        canceller.played(sc.far[span])
        out[span] = canceller.captured(sc.mic[span])
    return out


def test_two_device_threads_in_real_time() -> None:
    """Playback and capture threads each paced at 20 ms, with a phase between them that drifts
    (the pairing of played and captured blocks wanders by up to a block): ERLE after the first
    second of far-end speech, 4 s in all.

    A capture thread that stalls catches up with no harm (its blocks pair with the queue as
    before). A playback thread that stalls makes the canceller substitute silence, then its
    burst stands in the queue until it is cut a second later: the same as an underrun of a real
    speaker. On this shared 2-core VM that happens under load, so a run in which playback was
    late by more than 30 ms is run again (at most 3 times) and skipped if it never ran clean.
    """
    sc = scene(EchoPath(delay_ms=50))
    lateness = 0.0
    for _ in range(3):
        erle, counts, lateness = _two_device_threads(sc)
        print(f"\nERLE with two device threads: {erle:.1f} dB ({counts}, late {lateness:.3f} s)")
        if lateness <= 0.03:
            assert erle >= 20, counts
            return
    pytest.skip(f"the machine is too loaded: playback ran {lateness:.3f} s late")


def _two_device_threads(sc: Scene) -> tuple[float, str, float]:
    """(ERLE, counters, how late the playback thread was at worst)."""
    canceller = EchoCanceller()
    blocks = 200
    out = np.zeros(blocks * BLOCK, np.int16)
    errors: list[BaseException] = []
    late = [0.0, 0.0]
    start = time.monotonic() + 0.05

    def paced(which: int, body: Any, offset: float, skew: float) -> None:
        try:
            for k in range(blocks):
                due = start + offset + k * (0.02 + skew)
                time.sleep(max(0.0, due - time.monotonic()))
                late[which] = max(late[which], time.monotonic() - due)
                body(k)
        except BaseException as exc:  # reported to the test's thread
            errors.append(exc)

    def play(k: int) -> None:
        canceller.played(sc.far[k * BLOCK : (k + 1) * BLOCK])

    def capture(k: int) -> None:
        out[k * BLOCK : (k + 1) * BLOCK] = canceller.captured(sc.mic[k * BLOCK : (k + 1) * BLOCK])

    threads = [
        threading.Thread(target=paced, args=(0, play, 0.0, 0.0)),
        threading.Thread(target=paced, args=(1, capture, 0.02, 0.00005)),  # falls back 10 ms
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and not any(t.is_alive() for t in threads)
    assert canceller.frames == 2 * blocks
    counts = f"dropped {canceller.render_dropped}, missing {canceller.render_missing}"
    return erle_between(sc.mic, out, 1.0, 4.0), counts, late[0]


def test_a_standing_backlog_is_cut_so_the_render_stays_ahead_of_its_echo() -> None:
    """Playback starts with 40 ms of silence queued (an output buffer primed in one go), then
    hands over one block per captured block: the render the canceller sees would lag 40 ms,
    behind its own echo on a 30 ms path. After a second the backlog is cut to 20 ms."""
    sc = scene(EchoPath(delay_ms=30))
    canceller = EchoCanceller()
    canceller.played(np.zeros(2 * BLOCK, np.int16))
    out = np.zeros_like(sc.mic)
    for k in range(int(5.0 * RATE) // BLOCK):
        span = slice(k * BLOCK, (k + 1) * BLOCK)
        canceller.played(sc.far[span])
        out[span] = canceller.captured(sc.mic[span])
    erle = erle_between(sc.mic, out, 3, 5)
    print(f"\nERLE with a 40 ms standing backlog cut to 20 ms: {erle:.1f} dB")
    assert canceller.render_dropped == BLOCK
    assert erle >= 20


def test_played_backlog_is_bounded_and_silence_fills_gaps() -> None:
    canceller = EchoCanceller(max_backlog_ms=60)
    block = np.ones(BLOCK, np.int16)
    for _ in range(10):  # capture stalled for 200 ms
        canceller.played(block)
    assert canceller.render_dropped == 10 * BLOCK - 60 * RATE // 1000
    for _ in range(4):  # 60 ms of backlog, then one block with nothing played
        assert canceller.captured(np.zeros(BLOCK, np.int16)).shape == (BLOCK,)
    assert canceller.render_missing == 4 * BLOCK - 60 * RATE // 1000
    assert canceller.frames == 4 * BLOCK // FRAME_SAMPLES
    default = EchoCanceller()
    for _ in range(20):  # a passing backlog of 400 ms is kept up to 250 ms
        default.played(block)
    assert default.render_dropped == 20 * BLOCK - 250 * RATE // 1000


def test_blocks_of_any_multiple_of_10_ms() -> None:
    canceller = EchoCanceller()
    for size in (FRAME_SAMPLES, BLOCK, 3 * FRAME_SAMPLES):
        canceller.played(np.zeros(size, np.int16))
        out = canceller.captured(np.zeros(size, np.int16))
        assert out.dtype == np.int16 and out.shape == (size,)


@pytest.mark.parametrize(
    "samples",
    [
        np.zeros(BLOCK, np.float32),
        np.zeros(BLOCK + 1, np.int16),
        np.zeros((BLOCK, 2), np.int16),
        np.zeros(BLOCK, np.int32),
    ],
)
def test_bad_blocks_are_refused_clearly(samples: np.ndarray) -> None:
    canceller = EchoCanceller()
    with pytest.raises(ValueError, match="played"):
        canceller.played(samples)
    with pytest.raises(ValueError, match="captured"):
        canceller.captured(samples)


def test_missing_binding_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pywebrtc_audio", None)  # import raises ImportError
    with pytest.raises(EchoCancellerUnavailable, match="pywebrtc-audio") as caught:
        EchoCanceller()
    assert isinstance(caught.value, AgentError)
    with pytest.raises(EchoCancellerUnavailable, match="hybrid-classroom\\[kit\\]"):
        echo.load_binding()


def test_reset_forgets_the_queue() -> None:
    canceller = EchoCanceller()
    canceller.played(np.ones(BLOCK, np.int16))
    canceller.reset()
    canceller.captured(np.zeros(BLOCK, np.int16))
    assert canceller.render_missing == BLOCK


# -- through the real microphone source (sounddevice → PortAudio → ALSA file plugin) ----------

CAPTURE = r"""
import sys, threading
import numpy as np
from agent.clock import MediaClock
from agent.config import MicrophoneConfig
from agent.media.echo import EchoCanceller
from agent.sources.microphone import SoundDeviceMicrophone

far = np.fromfile(sys.argv[1], "<i2")
blocks = int(sys.argv[2])
canceller = EchoCanceller()
mic = SoundDeviceMicrophone(MicrophoneConfig(device="classroom_mic"), retry_interval=0.2)
inp, out, done = [], [], threading.Event()

def sink(block):
    if block.silent_placeholder or done.is_set():
        return
    k = len(out)
    canceller.played(far[k * 960 : (k + 1) * 960])  # the speaker's block k, then the mic's
    inp.append(block.samples.copy())
    out.append(canceller.captured(block.samples))
    if len(out) >= blocks:
        done.set()

mic.start(sink, MediaClock())
try:
    ok = done.wait(60)
finally:
    mic.stop()
np.concatenate(inp).astype("<i2").tofile(sys.argv[3])
np.concatenate(out).astype("<i2").tofile(sys.argv[4])
print("ok" if ok else "timeout")
"""


@NEEDS_PORTAUDIO
def test_through_the_microphone_source_and_alsa_file_plugin(tmp_path: Path) -> None:
    """The scene's microphone signal is the ``infile`` of an ALSA ``file`` PCM read by
    :class:`SoundDeviceMicrophone` in a child process (HOME points at the test's
    ``.asoundrc``); its sink feeds the canceller as the agent will. The null PCM is not paced,
    so this checks the samples, not timing."""
    sc = scene(EchoPath(delay_ms=50))
    blocks = int(5.0 * RATE) // BLOCK  # far end only, then 0–5 s
    sc.mic.astype("<i2").tofile(tmp_path / "mic.raw")
    sc.far.astype("<i2").tofile(tmp_path / "far.raw")
    (tmp_path / ".asoundrc").write_text(
        'pcm.classroom_mic {\n  type file\n  slave.pcm "null"\n  file "/dev/null"\n'
        f'  infile "{tmp_path / "mic.raw"}"\n  format "raw"\n}}\n'
    )
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("ALSA_CONFIG_PATH", None)
    env.pop("XDG_CONFIG_HOME", None)
    args = [str(tmp_path / n) for n in ("far.raw", "in.raw", "out.raw")]
    done = subprocess.run(
        [sys.executable, "-c", CAPTURE, args[0], str(blocks), args[1], args[2]],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
    captured = np.fromfile(args[1], "<i2")
    out = np.fromfile(args[2], "<i2")
    assert captured.size == out.size == blocks * BLOCK
    assert np.array_equal(captured, sc.mic[: captured.size])  # the file, from its first sample
    erle = erle_between(captured, out, 3.0, 5.0)
    print(f"\nERLE through PortAudio and ALSA's file plugin: {erle:.1f} dB")
    assert erle >= 20
    assert erle_db(sc, np.concatenate([out, np.zeros(sc.mic.size - out.size, np.int16)])) >= 20
