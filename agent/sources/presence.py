"""Is each configured device there? Answered without opening anything (no capture before Start).

Used for the status while no class is live, so the kiosk can show a device check with every
camera LED off.
"""

from __future__ import annotations

import os
from typing import Any

from ..config import SYNTHETIC, AgentConfig

NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")


def video_device_present(device: str) -> tuple[bool, str]:
    if device == SYNTHETIC:
        return True, ""
    if device.startswith(NETWORK_SCHEMES):
        return True, "network camera: checked when the class starts"
    path = f"/dev/video{device}" if device.isdigit() else device
    if os.path.exists(path):
        return True, ""
    return False, "device not found"


def microphone_present(device: str) -> tuple[bool, str]:
    if device == SYNTHETIC:
        return True, ""
    try:
        import sounddevice

        spec: int | str | None = (
            None if device == "default" else (int(device) if device.isdigit() else device)
        )
        sounddevice.query_devices(spec, "input")
    except (OSError, ValueError, ImportError):
        return False, "device not found"
    return True, ""


def idle_sources_status(config: AgentConfig) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for source_id, cfg in (("camera", config.camera), ("document", config.document)):
        if cfg.device:
            present, detail = video_device_present(cfg.device)
            out.append(_entry(source_id, "video", cfg.device, present, detail))
    if config.microphone.device:
        present, detail = microphone_present(config.microphone.device)
        out.append(_entry("microphone", "audio", config.microphone.device, present, detail))
    return out


def _entry(source_id: str, kind: str, device: str, present: bool, detail: str) -> dict[str, Any]:
    return {
        "id": source_id,
        "kind": kind,
        "device": device,
        "state": "ok" if present else "missing",
        "detail": detail,
        "capturing": False,
    }
