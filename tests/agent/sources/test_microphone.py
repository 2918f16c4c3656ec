"""The real microphone path (sounddevice → PortAudio → ALSA) through ALSA's ``file`` plugin.

There is no sound card here: an ``~/.asoundrc`` defines a capture PCM whose samples come from a
raw file (a 1 kHz sine at −12 dBFS peak) over the ``null`` PCM. PortAudio reads the ALSA
configuration when it initialises, so each capture runs in a child process with ``HOME`` set to
the test's directory. The ``null`` PCM is not paced: the file is read far faster than real time,
so the tests check content and levels, not timing, of real blocks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.clock import MediaClock
from agent.config import MicrophoneConfig
from agent.sources.base import RawAudioBlock, SourceState
from agent.sources.microphone import SoundDeviceMicrophone, rms_dbfs
from agent.sources.portaudio import device_spec
from tests.portaudio import NEEDS_PORTAUDIO

ROOT = Path(__file__).resolve().parents[3]
PCM_NAME = "classroom_tone"

CAPTURE = r"""
import json, sys, threading, time
from pathlib import Path
import numpy as np
from agent.clock import MediaClock
from agent.config import MicrophoneConfig
from agent.sources.microphone import SoundDeviceMicrophone

plan = json.loads(sys.argv[1])
retry = {"retry_interval": plan["retry"]} if plan.get("retry") else {}  # else the default
mic = SoundDeviceMicrophone(MicrophoneConfig(device=plan["device"]), **retry)
lock = threading.Lock()
real, silent = [], []

real_at = []

def sink(block):
    with lock:
        if block.silent_placeholder:
            silent.append((time.monotonic(), block.capture_time))
        else:
            real_at.append(time.monotonic())
        if not block.silent_placeholder and len(real) < 40:
            if not real:
                result["first_real_at"] = time.monotonic()
            s = block.samples
            real.append({"samples": s.tolist(), "level": mic.level_dbfs(), "dtype": str(s.dtype),
                         "contiguous": bool(s.flags.c_contiguous), "shape": list(s.shape)})

def wait(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lock:
            if predicate():
                return True
        time.sleep(0.01)
    return False

result = {}
mic.start(sink, MediaClock())

try:
    if plan.get("plug_in"):
        wait(lambda: len(silent) >= 5)
        result["before"] = mic.status().as_dict()
        Path(plan["plug_in"]["path"]).write_text(plan["plug_in"]["text"])
        result["plugged_at"] = time.monotonic()
    if plan.get("unplug"):
        # Unplugged mid-stream: ALSA then fails the pending read (-ENODEV), which PortAudio
        # reports as a host error; no real device can vanish here, so that one error is made
        # at the PortAudio boundary. The device also leaves the ALSA configuration, and
        # comes back with it.
        import sounddevice
        wait(lambda: len(real) >= 40)
        original_read = sounddevice.InputStream.read
        def failing_read(self, frames):
            raise sounddevice.PortAudioError("Unanticipated host error", -9999)
        rc = Path(plan["unplug"]["path"])
        rc.write_text("# unplugged\n")
        sounddevice.InputStream.read = failing_read
        with lock:
            silent_before = len(silent)
        wait(lambda: len(silent) >= silent_before + 50)
        result["during"] = mic.status().as_dict()
        with lock:
            result["during_silent"] = len(silent) - silent_before
        sounddevice.InputStream.read = original_read
        rc.write_text(plan["unplug"]["text"])
        result["plugged_at"] = time.monotonic()
        wait(lambda: real_at and real_at[-1] > result["plugged_at"])
        with lock:
            result["first_real_at"] = min(t for t in real_at if t > result["plugged_at"])
    if plan.get("silent_blocks"):
        wait(lambda: len(silent) >= plan["silent_blocks"])
    else:
        wait(lambda: len(real) >= 40)
    result["status"] = mic.status().as_dict()
    result["level"] = mic.level_dbfs()
finally:
    mic.stop()
with lock:
    def rate(times):
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    result["silent_rate"] = rate([c for _, c in silent[1:51]])
    result["silent_arrival_rate"] = rate([a for a, _ in silent[1:51]])
    result["silent"] = len(silent)
    result["real"] = real
result["stopped"] = mic.status().state
result["threads"] = [t.name for t in threading.enumerate() if t.name == "source-microphone"]
print(json.dumps(result))
"""


def write_tone(directory: Path) -> Path:
    """10 s of a 1 kHz sine at −12 dBFS peak, raw S16_LE mono 48 kHz."""
    t = np.arange(48_000 * 10) / 48_000
    tone = np.round(10 ** (-12 / 20) * 32767 * np.sin(2 * np.pi * 1000 * t)).astype("<i2")
    path = directory / "tone.raw"
    tone.tofile(path)
    return path


def asoundrc(raw: Path) -> str:
    return (
        f"pcm.{PCM_NAME} {{\n"
        "  type file\n"
        '  slave.pcm "null"\n'
        '  file "/dev/null"\n'
        f'  infile "{raw}"\n'
        '  format "raw"\n'
        "}\n"
    )


def capture(home: Path, plan: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("ALSA_CONFIG_PATH", None)
    env.pop("XDG_CONFIG_HOME", None)
    done = subprocess.run(
        [sys.executable, "-c", CAPTURE, json.dumps(plan)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["stopped"] == "stopped" and result["threads"] == []
    return result


def check_tone(blocks: list[dict[str, Any]]) -> None:
    assert len(blocks) == 40
    assert all(b["shape"] == [960] and b["dtype"] == "int16" and b["contiguous"] for b in blocks)
    samples = np.concatenate([np.array(b["samples"], np.float64) for b in blocks[4:]])
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    assert abs(np.argmax(spectrum) * 48_000 / len(samples) - 1000) < 5
    # a sine at −12 dBFS peak has an RMS of −15 dBFS
    assert all(abs(b["level"] - (-15.0)) < 1.0 for b in blocks)


@NEEDS_PORTAUDIO
def test_tone_from_alsa_file_plugin(tmp_path: Path) -> None:
    (tmp_path / ".asoundrc").write_text(asoundrc(write_tone(tmp_path)))
    result = capture(tmp_path, {"device": PCM_NAME, "retry": 0.2})
    assert result["status"]["state"] == "ok" and result["status"]["detail"] == ""
    assert result["status"]["placeholder"] is False and result["silent"] == 0
    check_tone(result["real"])
    assert abs(result["level"] - (-15.0)) < 2.0


@NEEDS_PORTAUDIO
def test_missing_microphone_sends_silence_at_50_per_second(tmp_path: Path) -> None:
    (tmp_path / ".asoundrc").write_text(asoundrc(write_tone(tmp_path)))
    plan = {"device": "no_such_microphone", "silent_blocks": 60, "retry": 0.2}
    result = capture(tmp_path, plan)
    assert result["status"]["state"] == "missing"
    assert result["status"]["detail"] == "device not found"
    assert result["status"]["placeholder"] is True
    assert result["real"] == [] and result["silent"] >= 60
    assert 48 <= result["silent_rate"] <= 52  # stamped 20 ms apart
    assert 40 <= result["silent_arrival_rate"] <= 60  # and paced in real time
    assert result["level"] == -100.0


@NEEDS_PORTAUDIO
def test_microphone_plugged_in_later_is_found(tmp_path: Path) -> None:
    rc = tmp_path / ".asoundrc"
    rc.write_text("# no capture device yet\n")
    plug_in = {"path": str(rc), "text": asoundrc(write_tone(tmp_path))}
    result = capture(tmp_path, {"device": PCM_NAME, "plug_in": plug_in})  # default retries
    assert result["before"]["state"] == "missing"
    assert result["status"]["state"] == "ok"
    check_tone(result["real"])
    back = result["first_real_at"] - result["plugged_at"]
    print(f"\nmicrophone plugged in: sound after {back:.2f} s (silence until then)")
    assert back <= 3.0


@NEEDS_PORTAUDIO
def test_microphone_unplugged_mid_class_gives_silence_then_sound_again(tmp_path: Path) -> None:
    rc = tmp_path / ".asoundrc"
    text = asoundrc(write_tone(tmp_path))
    rc.write_text(text)
    result = capture(tmp_path, {"device": PCM_NAME, "unplug": {"path": str(rc), "text": text}})
    during = result["during"]
    assert during["state"] in ("error", "missing") and during["placeholder"] is True
    assert result["during_silent"] >= 50  # pupils keep getting (silent) sound, 50 blocks/s
    assert result["status"]["state"] == "ok"
    back = result["first_real_at"] - result["plugged_at"]
    print(f"\nmicrophone plugged back: sound after {back:.2f} s ({during['detail']} meanwhile)")
    assert back <= 3.0


class Blocks:
    def __init__(self) -> None:
        self.blocks: list[RawAudioBlock] = []
        self.lock = threading.Lock()

    def __call__(self, block: RawAudioBlock) -> None:
        with self.lock:
            self.blocks.append(block)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[RawAudioBlock]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.blocks) >= count:
                    return list(self.blocks)
            time.sleep(0.01)
        raise AssertionError(f"fewer than {count} blocks arrived in time")


def test_without_portaudio_it_reports_error_and_sends_silence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # the import now fails
    mic, sink = SoundDeviceMicrophone(MicrophoneConfig(device="default"), 0.2), Blocks()
    assert mic.level_dbfs() is None
    mic.start(sink, MediaClock())
    try:
        blocks = sink.wait_for(5)
        status = mic.status()
    finally:
        mic.stop()
    assert status.state == SourceState.ERROR and status.detail == "audio system unavailable"
    assert all(b.silent_placeholder and b.samples.shape == (960,) for b in blocks)
    assert all(b.samples.dtype == np.int16 and not b.samples.any() for b in blocks)
    assert mic.level_dbfs() == -100.0
    assert mic.status().state == SourceState.STOPPED
    assert not [t for t in threading.enumerate() if t.name == "source-microphone"]


def test_device_spec_and_levels() -> None:
    assert device_spec("default") is None
    assert device_spec("2") == 2
    assert device_spec("USB Audio") == "USB Audio"
    assert rms_dbfs(np.zeros(960, np.int16)) == -100.0
    full = np.full(960, -32768, np.int16)
    assert rms_dbfs(full) == 0.0
    t = np.arange(960) / 48_000
    sine = np.round(16384 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    assert abs(rms_dbfs(sine) - (-9.0)) < 0.1
