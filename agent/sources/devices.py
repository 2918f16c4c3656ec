"""``kit-agent devices``: what cameras, microphones and speakers this machine has, without
capturing or playing.

Cameras are read from ``/dev/video*`` and their names from sysfs: no device is opened, so no
camera LED lights up. Microphones and speakers are PortAudio's input and output devices (a name
or index there is what ``[microphone] device`` and ``[speaker] device`` take); without PortAudio
the lists are empty.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("agent.sources")

DEV_DIR = Path("/dev")
SYSFS_DIR = Path("/sys/class/video4linux")


def _video_number(path: Path) -> int:
    digits = re.sub(r"\D", "", path.name)
    return int(digits) if digits else -1


def list_cameras(dev_dir: Path = DEV_DIR, sysfs_dir: Path = SYSFS_DIR) -> list[dict[str, str]]:
    """V4L2 device nodes in numeric order, each with its driver-given name (may be empty).

    A UVC camera usually has two nodes: the first gives pictures, the second metadata."""
    cameras = []
    for path in sorted(dev_dir.glob("video*"), key=_video_number):
        try:
            name = (sysfs_dir / path.name / "name").read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            name = ""
        cameras.append({"device": str(path), "name": name})
    return cameras


def list_microphones() -> list[dict[str, Any]]:
    """PortAudio input devices: index, name, default sample rate; empty without PortAudio."""
    return _audio_devices("max_input_channels")


def list_speakers() -> list[dict[str, Any]]:
    """PortAudio output devices: index, name, default sample rate; empty without PortAudio."""
    return _audio_devices("max_output_channels")


def _audio_devices(channels: str) -> list[dict[str, Any]]:
    try:
        import sounddevice
    except (OSError, ImportError) as exc:  # libportaudio missing: the import itself fails
        log.info("no PortAudio: %s", exc)
        return []
    from .portaudio import PORTAUDIO_LOCK

    try:
        with PORTAUDIO_LOCK:  # not while a microphone thread re-initialises PortAudio
            devices = sounddevice.query_devices()
    except sounddevice.PortAudioError as exc:
        log.info("PortAudio cannot list devices: %s", exc)
        return []
    return [
        {
            "index": int(device["index"]) if "index" in device else index,
            "name": str(device["name"]),
            "default_samplerate": float(device["default_samplerate"]),
        }
        for index, device in enumerate(devices)
        if device[channels] > 0
    ]
