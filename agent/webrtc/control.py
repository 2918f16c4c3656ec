"""One pupil's adaptation loop: estimate → level → layers, pacing rate and probe padding.

Every ``TICK_S`` it reads the pupil's estimate (``feedback``), lets the layer choice
(``allocate``) pick the level within the pupil's share of the school's uplink (``cap_bps``,
set by the class, ``uplink``), points each video track at its layer (they switch at that
layer's next keyframe, ``tracks``), paces the pupil at their estimate (never below what their
level needs; with a bigger bucket on the top level when the estimate and the uplink share both
leave room over it, ``pacer.HEADROOM_BURST_S``) and sends the probe padding due. When the
pupil's quality changes between full, reduced and sound only, ``on_quality`` is called (the
viewer tells the page).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..media.layers import Layer
from .allocate import LayerChoice, Level, ladder
from .feedback import PupilFeedback
from .pacer import Pacer
from .tracks import PAUSED, PacketTrack

log = logging.getLogger("agent.webrtc")

TICK_S = 0.25
PACE_OVER_LEVEL = 1.25
"""The pacer never runs slower than this multiple of what the pupil's level needs."""
DEMAND_OVER_ESTIMATE = 1.5
PROBE_NACKS = 2
PROBE_NACK_SHARE = 0.01
"""A probe ends, failed, when more than this share of the packets sent during it (and more
than ``PROBE_NACKS``) were NACKed."""
PADDING_RUN = 2_800
"""Bytes of padding sent at once (ten packets)."""
FULL, REDUCED, AUDIO_ONLY = "full", "reduced", "audio-only"


def quality_of(level: Level, levels: Sequence[Level]) -> str:
    """``full`` on the top level, ``audio-only`` when every camera is paused, else
    ``reduced``."""
    if level == levels[-1]:
        return FULL
    if level.camera in (PAUSED, None) and level.document in (PAUSED, None):
        return AUDIO_ONLY
    return REDUCED


class PupilControl:
    """The loop of one pupil; ``start_layer`` before the tracks bind, ``run`` once connected."""

    def __init__(
        self,
        layers: Mapping[str, tuple[Layer, ...]],
        sound_bps: int,
        feedback: PupilFeedback,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.feedback = feedback
        levels = ladder(layers.get("camera", ()), layers.get("document", ()), sound_bps)
        self.choice = LayerChoice(levels, clock())
        self.pacer = Pacer(feedback.estimate(), clock)
        self.tracks: dict[str, PacketTrack] = {}
        self.padder: Any = None
        """The camera sender's loop (``rtpsend.LeanRtpLoop``): it sends the probe padding."""
        self.cap_bps = 0
        """The pupil's share of the school's uplink (0: no budget), set by the class."""
        self.on_quality: Callable[[str], None] = lambda quality: None
        self.quality = quality_of(self.choice.level, self.choice.levels)
        self.demand_bps = self.choice.level.bps
        self._probe_base = (0, 0)

    def start_layer(self, source_id: str) -> str:
        """The layer a track starts on (the safe start)."""
        level = self.choice.level
        state = level.camera if source_id == "camera" else level.document
        return state or "high"

    def tick(self) -> int:
        """One round; returns the padding (bytes) to send now."""
        now = self._clock()
        estimator = self.feedback.estimator
        estimate = self.feedback.estimate()
        was_probing = self.choice.probing
        probe = self.choice.probe(now, estimate, estimator.loss, self.cap_bps, self._congested)
        if self.choice.probing and not was_probing:
            self._probe_base = (self.feedback.nacked, self._packets_sent())
        if self.choice.failed_from is not None:  # the probe's losses are not the link's
            estimator.probe_failed(now, self.choice.failed_from)
            self.choice.failed_from = None
            estimate = self.feedback.estimate()
        level = self.choice.update(now, estimate, self.cap_bps)
        for source_id, track in self.tracks.items():
            state = level.camera if source_id == "camera" else level.document
            if state is not None and state != track.layer:
                track.want(state)
        floor = int(level.bps * PACE_OVER_LEVEL)
        pace = max(estimate, floor)
        if self.cap_bps:
            pace = min(pace, max(self.cap_bps, floor))
        headroom = (
            self.choice.top and not probe and min(estimate, self.cap_bps or estimate) >= floor
        )
        self.pacer.set_rate(pace, probe, headroom)
        self.feedback.pacing_bps = self.pacer.rate_bps
        self.demand_bps = self._demand(estimate)
        quality = quality_of(level, self.choice.levels)
        if quality != self.quality:
            self.quality = quality
            self.on_quality(quality)
        return self.pacer.padding_due(TICK_S)

    def _congested(self, since: float) -> bool:
        """Whether the pupil said "less" since the probe started: its REMB fell, or it NACKed
        more than ``PROBE_NACK_SHARE`` of the packets sent since (NACKs come within one RTT of
        a loss; receiver reports ~1 s later: measured at 1.5 Mbit/s, a probe to 2 Mbit/s that
        waited for them lost ~70 packets)."""
        if self.feedback.estimator.remb_fell(self._clock(), since):
            return True
        nacked, packets = self._probe_base
        lost = self.feedback.nacked - nacked
        return lost > max(PROBE_NACKS, (self._packets_sent() - packets) * PROBE_NACK_SHARE)

    def _packets_sent(self) -> int:
        return sum(track.rtp_packets for track in self.tracks.values())

    async def _pad(self, due: int, deadline: float) -> None:
        """Send ``due`` bytes of probe padding through the pacer, in runs, before ``deadline``."""
        padder = self.padder
        while due > 0 and padder is not None and self._clock() < deadline:
            run = min(due, PADDING_RUN)
            await self.pacer.acquire(run, priority=2, padding=True)
            sent = await padder.send_padding(run)
            if not sent:
                return  # no RTX with this pupil, or not sending yet: nothing to probe with
            self.pacer.padding_bytes += sent
            due -= run

    def _demand(self, estimate: int) -> int:
        """What this pupil would take of the uplink: the top level's cost, up to 1.5 × their
        estimate (room to probe for more)."""
        return min(self.choice.levels[-1].bps, int(estimate * DEMAND_OVER_ESTIMATE))

    async def run(self) -> None:
        """Until cancelled (the viewer closes); a failure is logged and the pupil keeps the
        layers they have."""
        try:
            while True:
                deadline = self._clock() + TICK_S
                due = self.tick()
                await self._pad(due, deadline)
                await asyncio.sleep(max(0.0, deadline - self._clock()))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("adaptation loop stopped")

    def stats(self) -> dict[str, Any]:
        level = self.choice.level
        tracks = self.tracks
        states = {"camera": level.camera, "document": level.document}
        return {
            "layers": {  # what each track sends (it follows the level at the next keyframe)
                source_id: tracks[source_id].layer
                if source_id in tracks and states[source_id] is not None
                else None
                for source_id in ("camera", "document")
            },
            "quality": self.quality,
            "allotted_kbps": round(level.bps / 1000),
            "pace_kbps": round(self.pacer.rate_bps / 1000),
            "probing": self.choice.probing,
            "padding_bytes": self.pacer.padding_bytes,
            "layer_changes": self.choice.ups + self.choice.downs,
        }
