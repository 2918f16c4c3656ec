"""``kit-agent devices``: what cameras and microphones this machine has, without capturing."""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Any


def list_cameras() -> list[dict[str, str]]:
    """V4L2 devices with their driver-given names, read from sysfs (no device is opened)."""
    cameras = []
    for path in sorted(glob.glob("/dev/video*"), key=lambda p: int(re.sub(r"\D", "", p) or 0)):
        name_file = Path("/sys/class/video4linux") / Path(path).name / "name"
        try:
            name = name_file.read_text(encoding="utf-8").strip()
        except OSError:
            name = ""
        cameras.append({"device": path, "name": name})
    return cameras


def list_microphones() -> list[dict[str, Any]]:
    """PortAudio input devices (index, name, default rate); empty if PortAudio is missing."""
    try:
        import sounddevice
    except OSError:
        return []
    try:
        devices = sounddevice.query_devices()
    except sounddevice.PortAudioError:
        return []
    return [
        {"index": index, "name": d["name"], "default_samplerate": d["default_samplerate"]}
        for index, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ]
