"""The health report the kit sends every ``health_interval_s`` (schema: protocol.HealthReport).

Rates (fps, bitrate, loss) are computed from the encoders' and viewers' counters between two
reports; loss is what pupils did not get: the frames the fan-out dropped for slow pupils, and of
the packets sent, those the pupils' receiver reports say were lost on the way.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from kitlink import HealthReport

from .. import __version__
from ..session import ClassSession, SessionState

DEVICE_STATES = {"ok": "ok", "missing": "missing", "error": "error", "stopped": "ok"}
TEMPERATURE_SENSORS = ("coretemp", "k10temp", "cpu_thermal", "acpitz", "zenpower")


def cpu_temperature() -> float | None:
    """The CPU package temperature where the machine has a sensor (None elsewhere)."""
    try:
        sensors = psutil.sensors_temperatures()
    except (AttributeError, OSError):
        return None
    for name in (*TEMPERATURE_SENSORS, *sensors):
        for entry in sensors.get(name, []):
            if entry.current:
                return round(float(entry.current), 1)
    return None


class HealthCollector:
    def __init__(
        self,
        session: ClassSession,
        disk_path: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.disk_path = disk_path
        self.clock = clock
        self.started = clock()
        self._last_at = clock()
        self._encoders: dict[str, tuple[int, int]] = {}
        self._tracks: dict[str, tuple[int, ...]] = {}
        self.network = False
        """Include ``network`` (set by the link once the server has shown it knows it)."""
        self.classroom = False
        """Include ``classroom`` (set by the link when the server's welcome lists
        ``classroom_health``)."""
        psutil.cpu_percent(None)  # the first call only starts the measurement

    def device_states(self) -> tuple[tuple[str, str, str], ...] | None:
        """(source, state, detail) of the live class's devices, None while idle: a change is
        reported at once (a camera unplugged mid-class), not at the next periodic report."""
        pipeline = self.session.pipeline
        if self.session.state != SessionState.LIVE or pipeline is None:
            return None
        return tuple(
            (str(s["id"]), str(s["state"]), str(s.get("detail", "")))
            for s in pipeline.source_status()
        )

    def report(self) -> HealthReport:
        status = self.session.status()
        now = self.clock()
        elapsed = max(1e-3, now - self._last_at)
        self._last_at = now
        memory = psutil.virtual_memory()
        try:
            disk_free = shutil.disk_usage(self.disk_path).free
        except OSError:
            disk_free = 0
        network = self.session.network.health(self.session.paths()) if self.network else None
        # The distribution on the same condition as ``network`` (the server has sent
        # ``ice_servers`` on this link): a server from before both would refuse the field and
        # close the link (docs/protocol.md, "Pupils").
        pupils = pupils_health(status["viewers"]) if self.network else None
        return HealthReport.model_validate(
            {
                "network": network,
                "pupils": pupils,
                "classroom": self.session.classroom_health() if self.classroom else None,
                "software": __version__,
                "uptime_s": round(now - self.started, 1),
                "cpu_percent": psutil.cpu_percent(None),
                "load": [round(x, 2) for x in os.getloadavg()],
                "memory": {
                    "total_mb": memory.total // 2**20,
                    "available_mb": memory.available // 2**20,
                },
                "disk_free_mb": disk_free // 2**20,
                "cpu_temp_c": cpu_temperature(),
                "devices": self._devices(status["sources"]),
                "session": {
                    "state": "live" if self.session.state == SessionState.LIVE else "idle",
                    "viewers": len(self.session.viewers),
                    "elapsed_s": status["session"]["elapsed_s"] or 0,
                },
                "streams": self._streams(status, elapsed),
            }
        )

    def _devices(self, sources: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
        by_id = {s["id"]: s for s in sources}
        out = {}
        for name in ("camera", "document", "microphone"):
            source = by_id.get(name)
            if source is None:
                out[name] = {"state": "disabled", "detail": ""}
            else:
                state = DEVICE_STATES.get(str(source.get("state")), "error")
                out[name] = {"state": state, "detail": str(source.get("detail", ""))[:200]}
        return out

    def _streams(self, status: dict[str, Any], elapsed: float) -> list[dict[str, Any]]:
        """One entry per source and codec. A source is encoded once per quality layer in use
        (``encode-camera-h264-mid``…, docs/adaptation.md): its bitrate is the sum over its
        layers (what leaves the kit), its fps the fastest layer's (the top layer's rate while
        anyone watches it; 0 only when every layer of the source has stalled)."""
        tracks: dict[str, tuple[int, ...]] = {}
        for viewer in status["viewers"]:
            for track_id, stats in viewer.get("tracks", {}).items():
                counts = tuple(int(stats.get(key, 0)) for key in _COUNTED)
                before = tracks.get(track_id, (0,) * len(_COUNTED))
                tracks[track_id] = tuple(a + b for a, b in zip(before, counts, strict=True))
        encoders: dict[str, tuple[int, int]] = {}
        grouped: dict[tuple[str, str], tuple[float, float]] = {}  # (source, codec) → fps, kbps
        for enc in status["encoders"][:64]:
            source = str(enc.get("source", enc.get("name", "?")))
            name = str(enc.get("name", source))
            frames, sent = int(enc.get("frames", 0)), int(enc.get("bytes", 0))
            encoders[name] = (frames, sent)
            prev_frames, prev_bytes = self._encoders.get(name, (frames, sent))
            fps = max(0, frames - prev_frames) / elapsed
            kbps = max(0, sent - prev_bytes) * 8 / elapsed / 1000
            key = (source, str(enc.get("codec", ""))[:16])
            top_fps, total_kbps = grouped.get(key, (0.0, 0.0))
            grouped[key] = (max(top_fps, fps), total_kbps + kbps)
        out = []
        for (source, codec), (fps, kbps) in list(grouped.items())[:16]:
            delivered, dropped, packets, lost = _delta(tracks.get(source), self._tracks.get(source))
            out.append(
                {
                    "source": source,
                    "codec": codec,
                    "fps": round(fps, 1),
                    "bitrate_kbps": round(kbps, 1),
                    "loss_percent": _loss_percent(delivered, dropped, packets, lost),
                }
            )
        self._encoders, self._tracks = encoders, tracks
        return out


def pupils_health(viewers: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The class's distribution from ``/api/status``'s viewers (their ``link``): pupils per
    layer of each camera, per quality level, and the worst loss. A value the kit does not
    know (a layer ``null``: camera not configured or not negotiated) is not counted; None
    when no pupil has any of it (no pupil, or a kit before layers)."""
    layers: dict[str, dict[str, int]] = {"camera": {}, "document": {}}
    quality: dict[str, int] = {}
    worst: float | None = None
    judged = False
    for viewer in viewers:
        link = viewer.get("link")
        if not isinstance(link, dict) or viewer.get("admitted") is False:
            continue  # a pupil in the waiting room gets nothing yet: not on any layer
        for camera, layer in (link.get("layers") or {}).items():
            if layer in _LAYERS.get(camera, ()):
                layers[camera][layer] = layers[camera].get(layer, 0) + 1
                judged = True
        level = link.get("quality")
        if level in _QUALITY:
            quality[level] = quality.get(level, 0) + 1
            judged = True
        loss = link.get("loss_percent")
        if isinstance(loss, int | float) and math.isfinite(loss):
            worst = max(worst or 0.0, min(100.0, max(0.0, float(loss))))
            judged = True
    if not judged:
        return None
    return {"layers": layers, "quality": quality, "worst_loss_percent": worst}


_LAYERS = {
    "camera": ("high", "mid", "low", "paused"),
    "document": ("high", "low", "keyframes", "paused"),
}
_QUALITY = ("full", "reduced", "audio-only")


_COUNTED = ("delivered", "dropped", "rtp_packets", "lost")
"""Per track: frames the fan-out delivered to and dropped for the pupil, RTP packets sent to
the pupil and packets the pupil reported lost (its receiver reports)."""


def _delta(now: tuple[int, ...] | None, before: tuple[int, ...] | None) -> tuple[int, ...]:
    if now is None:
        return (0,) * len(_COUNTED)
    before = before or (0,) * len(_COUNTED)
    return tuple(max(0, a - b) for a, b in zip(now, before, strict=True))


def _loss_percent(delivered: int, dropped: int, sent: int, lost: int) -> float:
    """What pupils did not get: frames dropped before sending, then of what was sent, what
    their receiver reports say was lost on the way (``1 − (1 − dropped)(1 − lost)``)."""
    queued = dropped / (delivered + dropped) if delivered + dropped else 0.0
    wire = min(lost / sent, 1.0) if sent else 0.0
    return round(100 * (1 - (1 - queued) * (1 - wire)), 2)
