"""Device listing: never opens a device, never raises, even without cameras or PortAudio."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.sources.devices import list_cameras, list_microphones, list_speakers


def test_listings_on_this_machine_are_lists() -> None:
    cameras = list_cameras()
    microphones = list_microphones()
    assert isinstance(cameras, list) and isinstance(microphones, list)
    assert isinstance(list_speakers(), list)
    assert all(set(c) == {"device", "name"} for c in cameras)
    assert all(set(m) == {"index", "name", "default_samplerate"} for m in microphones)


def test_cameras_come_from_dev_nodes_and_sysfs_names(tmp_path: Path) -> None:
    dev, sysfs = tmp_path / "dev", tmp_path / "sys"
    dev.mkdir()
    for n in (10, 0, 1, 2):
        (dev / f"video{n}").touch()
    (dev / "null").touch()
    for n, name in ((0, "HD Pro Webcam C920\n"), (1, "HD Pro Webcam C920"), (10, "Doc cam")):
        (sysfs / f"video{n}").mkdir(parents=True)
        (sysfs / f"video{n}" / "name").write_text(name)
    assert list_cameras(dev, sysfs) == [
        {"device": str(dev / "video0"), "name": "HD Pro Webcam C920"},
        {"device": str(dev / "video1"), "name": "HD Pro Webcam C920"},
        {"device": str(dev / "video2"), "name": ""},
        {"device": str(dev / "video10"), "name": "Doc cam"},
    ]


def test_no_portaudio_means_no_microphones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # the import now fails
    assert list_microphones() == []


class FakePortAudioError(Exception):
    pass


def fake_sounddevice(devices: list[dict[str, Any]] | None) -> SimpleNamespace:
    def query_devices() -> list[dict[str, Any]]:
        if devices is None:
            raise FakePortAudioError("Error querying device")
        return devices

    return SimpleNamespace(query_devices=query_devices, PortAudioError=FakePortAudioError)


def test_microphones_are_the_input_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [
        {"name": "HDMI out", "index": 0, "max_input_channels": 0, "default_samplerate": 48000.0},
        {"name": "USB Audio", "index": 1, "max_input_channels": 1, "default_samplerate": 44100.0},
        {"name": "default", "index": 2, "max_input_channels": 32, "default_samplerate": 48000.0},
    ]
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice(devices))
    assert list_microphones() == [
        {"index": 1, "name": "USB Audio", "default_samplerate": 44100.0},
        {"index": 2, "name": "default", "default_samplerate": 48000.0},
    ]
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice(None))
    assert list_microphones() == []


def test_speakers_are_the_output_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [
        {"name": "HDMI out", "index": 0, "max_input_channels": 0, "max_output_channels": 8,
         "default_samplerate": 48000.0},
        {"name": "USB mic", "index": 1, "max_input_channels": 1, "max_output_channels": 0,
         "default_samplerate": 44100.0},
    ]  # fmt: skip
    monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice(devices))
    assert list_speakers() == [{"index": 0, "name": "HDMI out", "default_samplerate": 48000.0}]
    monkeypatch.setitem(sys.modules, "sounddevice", None)
    assert list_speakers() == []
