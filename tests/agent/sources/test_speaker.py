"""The speaker thread (agent/sources/speaker.py): the null sink's real time, a real PortAudio
device through ALSA's ``file`` plugin (in a child process with its own ``~/.asoundrc``, as the
microphone's tests do), a missing device and a device that fails mid-stream: status, retry,
and the voices' clock that never stops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

from agent.sources.portaudio import NOT_FOUND
from agent.sources.speaker import NOT_PLAYING, Speaker
from tests.portaudio import NEEDS_PORTAUDIO

ROOT = Path(__file__).resolve().parents[3]
PCM_NAME = "classroom_speaker"


def tone(n: int) -> np.ndarray:
    t = (np.arange(960) + n * 960) / 48_000
    return np.round(0.25 * 32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)


class Ticks:
    def __init__(self, silent_after: int | None = None) -> None:
        self.count = 0
        self.silent_after = silent_after
        self.lock = threading.Lock()

    def __call__(self) -> np.ndarray | None:
        with self.lock:
            n = self.count
            self.count += 1
        return None if self.silent_after is not None and n >= self.silent_after else tone(n)


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_null_sink_keeps_real_time_and_plays_nowhere() -> None:
    ticks = Ticks(silent_after=30)
    tapped: list[tuple[np.ndarray, float]] = []
    played: list[float] = []
    speaker = Speaker(
        "null", ticks, lambda b, when: played.append(when), tap=lambda b, w: tapped.append((b, w))
    )
    speaker.start()
    try:
        wait_for(lambda: len(tapped) >= 60)
        status = speaker.status()
    finally:
        speaker.stop()
    assert status["state"] == "ok" and status["detail"] == "played nowhere"
    times = [when for _, when in tapped[:60]]
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert 45 < rate < 55  # 50 blocks a second
    assert len(played) == 30  # only what a voice made; the silence after is not "played"
    assert not tapped[45][0].any()
    assert speaker.status()["state"] == "stopped"
    assert "source-speaker" not in [t.name for t in threading.enumerate()]


class FakePortAudioError(Exception):
    pass


class FakeStream:
    """sounddevice.OutputStream's surface; fails its write after ``fail_after`` blocks."""

    opened: ClassVar[list[FakeStream]] = []
    fail_after: ClassVar[int | None] = None

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.latency = 0.012
        self.written: list[np.ndarray] = []
        self.closed = False
        FakeStream.opened.append(self)

    def start(self) -> None:
        pass

    def write(self, block: np.ndarray) -> bool:
        if self.fail_after is not None and len(self.written) >= self.fail_after:
            raise FakePortAudioError("Unanticipated host error", -9999)
        self.written.append(block.copy())
        time.sleep(0.02)
        return False

    def close(self, ignore_errors: bool = False) -> None:
        self.closed = True


def fake_sounddevice(devices: set[str]) -> SimpleNamespace:
    def output_stream(**kwargs: Any) -> FakeStream:
        if kwargs["device"] not in devices:
            raise ValueError(f"No output device matching {kwargs['device']!r}")
        return FakeStream(**kwargs)

    return SimpleNamespace(
        OutputStream=output_stream,
        PortAudioError=FakePortAudioError,
        _initialize=lambda: None,
        _terminate=lambda: None,
        _initialized=1,
    )


def test_a_device_that_fails_is_an_error_then_reopened(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeStream.opened = []
    monkeypatch.setattr(FakeStream, "fail_after", 10)
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice({"USB speaker"}))
    ticks = Ticks()
    speaker = Speaker("USB speaker", ticks, retry_interval=0.2)
    speaker.start()
    try:
        wait_for(lambda: len(FakeStream.opened) >= 1 and speaker.status()["state"] == "error")
        assert speaker.status()["detail"] == NOT_PLAYING
        during = ticks.count
        wait_for(lambda: ticks.count >= during + 5)  # the voices' clock goes on without it
        wait_for(lambda: len(FakeStream.opened) >= 2)  # tried again after retry_interval
        assert FakeStream.opened[0].closed
    finally:
        speaker.stop()
    stream = FakeStream.opened[0]
    assert stream.kwargs["latency"] == "low" and stream.kwargs["blocksize"] == 960
    assert stream.kwargs["channels"] == 1 and stream.kwargs["dtype"] == "int16"
    assert np.array_equal(stream.written[0], tone(0))
    assert speaker.opened >= 2


def test_a_missing_device_is_reported_and_the_clock_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice(set()))
    ticks = Ticks()
    speaker = Speaker("USB speaker", ticks, retry_interval=0.2)
    speaker.start()
    try:
        wait_for(lambda: ticks.count >= 50)
        started = time.monotonic()
        before = ticks.count
        time.sleep(0.5)
        rate = (ticks.count - before) / (time.monotonic() - started)
        status = speaker.status()
    finally:
        speaker.stop()
    assert status["state"] == "missing" and status["detail"] == NOT_FOUND
    assert 40 < rate < 60


def test_no_portaudio_is_an_error_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    ticks = Ticks()
    speaker = Speaker("default", ticks, retry_interval=0.2)
    speaker.start()
    try:
        wait_for(lambda: ticks.count >= 10)
        assert speaker.status() == {
            "state": "error",
            "detail": "audio system unavailable",
            "device": "default",
            "latency_ms": "",
        }
    finally:
        speaker.stop()


PLAY = r"""
import json, sys, time
import numpy as np
from agent.sources.speaker import Speaker

plan = json.loads(sys.argv[1])
n = [0]
def tick():
    t = (np.arange(960) + n[0] * 960) / 48000
    n[0] += 1
    return np.round(0.25 * 32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
speaker = Speaker(plan["device"], tick, retry_interval=0.2)
speaker.start()
deadline = time.monotonic() + 5
while time.monotonic() < deadline and n[0] < plan["blocks"]:
    time.sleep(0.01)
status = speaker.status()
speaker.stop()
print(json.dumps({"status": status, "ticks": n[0]}))
"""


def play(home: Path, device: str, blocks: int) -> dict[str, Any]:
    """Run ``PLAY`` in a child process whose ALSA configuration is ``home``/.asoundrc: what it
    printed (the speaker's status and the blocks it ticked)."""
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("ALSA_CONFIG_PATH", None)
    done = subprocess.run(
        [sys.executable, "-c", PLAY, json.dumps({"device": device, "blocks": blocks})],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@NEEDS_PORTAUDIO
def test_tone_reaches_an_alsa_file_device(tmp_path: Path) -> None:
    """sounddevice → PortAudio → ALSA: the ``file`` plugin writes what the device plays to a
    raw file (over the ``null`` PCM, which is not paced: this checks content, not timing)."""
    out = tmp_path / "played.raw"
    (tmp_path / ".asoundrc").write_text(
        f'pcm.{PCM_NAME} {{\n  type file\n  slave.pcm "null"\n  file "{out}"\n  format "raw"\n}}\n'
    )
    result = play(tmp_path, PCM_NAME, 100)
    assert result["status"]["state"] == "ok", result
    samples = np.fromfile(out, dtype="<i2")
    assert samples.size >= 48_000  # 50 blocks at least reached the device
    spectrum = np.abs(np.fft.rfft(samples[:48_000] * np.hanning(48_000)))
    assert abs(np.argmax(spectrum) - 1000) <= 2  # 1 Hz bins: the tone, unchanged
    peak = np.abs(samples[:48_000].astype(np.int32)).max()
    assert abs(20 * np.log10(peak / 32767) - (-12)) < 0.5


@NEEDS_PORTAUDIO
def test_default_without_any_sound_card_is_missing(tmp_path: Path) -> None:
    """This machine has no sound card: PortAudio lists no output, ``default`` is missing."""
    (tmp_path / ".asoundrc").write_text("# no devices\n")
    result = play(tmp_path, "default", 30)
    if result["status"]["state"] == "ok":
        pytest.skip("this machine has a sound card")
    assert result["status"]["state"] == "missing" and result["ticks"] >= 30
