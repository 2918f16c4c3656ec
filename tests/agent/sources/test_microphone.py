"""The real microphone path (sounddevice → PortAudio → ALSA) through ALSA's file plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]

CAPTURE = """
import json, sys, time
import numpy as np
from agent.clock import MediaClock
from agent.config import MicrophoneConfig
from agent.sources.microphone import SoundDeviceMicrophone
blocks = []
mic = SoundDeviceMicrophone(MicrophoneConfig(device=sys.argv[1]), retry_interval=0.2)
mic.start(blocks.append, MediaClock())
deadline = time.monotonic() + 5
while len(blocks) < 40 and time.monotonic() < deadline:
    time.sleep(0.02)
status = mic.status().as_dict()
level = mic.level_dbfs()
mic.stop()
samples = np.concatenate([b.samples for b in blocks[5:40]]) if len(blocks) >= 40 else np.zeros(0)
print(json.dumps({"status": status, "level": level, "blocks": len(blocks),
                  "shapes": sorted({b.samples.shape[0] for b in blocks}),
                  "placeholders": sum(b.silent_placeholder for b in blocks),
                  "samples": samples.tolist()}))
"""


def _alsa_home(tmp_path: Path) -> Path:
    t = np.arange(48_000 * 10) / 48_000
    tone = (10 ** (-12 / 20) * 32767 * np.sin(2 * np.pi * 1000 * t)).astype("<i2")
    raw = tmp_path / "tone.raw"
    tone.tofile(raw)
    (tmp_path / ".asoundrc").write_text(
        'pcm.classroom_tone {\n  type file\n  slave.pcm "null"\n  file "/dev/null"\n'
        f'  infile "{raw}"\n  format "raw"\n}}\n'
    )
    return tmp_path


def _capture(home: Path, device: str) -> dict[str, object]:
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CAPTURE, device],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


def _portaudio_available() -> bool:
    try:
        import sounddevice  # noqa: F401
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _portaudio_available(), reason="libportaudio2 not installed")


def test_tone_from_alsa_file_plugin(tmp_path: Path) -> None:
    result = _capture(_alsa_home(tmp_path), "classroom_tone")
    assert result["status"]["state"] == "ok"  # type: ignore[index]
    assert result["shapes"] == [960] and result["placeholders"] == 0
    samples = np.array(result["samples"], dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(samples))
    assert abs(np.argmax(spectrum) * 48_000 / len(samples) - 1000) < 5
    # a sine at −12 dBFS peak has an RMS of −15 dBFS
    assert abs(float(result["level"]) - (-15.0)) < 1.0  # type: ignore[arg-type]


def test_missing_microphone_sends_silence_and_says_missing(tmp_path: Path) -> None:
    result = _capture(_alsa_home(tmp_path), "no_such_microphone")
    assert result["status"]["state"] == "missing"  # type: ignore[index]
    assert result["blocks"] >= 40 and result["placeholders"] == result["blocks"]
    assert result["level"] == -100.0
