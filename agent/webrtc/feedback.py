"""What one pupil's browser tells the kit about its link, and what the kit makes of it.

:class:`PupilFeedback` is one per pupil (one peer connection), shared by its senders. It takes
the RTCP aiortc has parsed for those senders (receiver report blocks, REMB; ``rtpsend`` hands
them over after aiortc's own handling, which measured the RTT) into the pupil's
:class:`~.estimate.BandwidthEstimator`, and answers the NACK path's question "resend this
packet?" from its :class:`~.resend.ResendBudget`. Nothing here runs per sent packet.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiortc import rtp as aiortc_rtp

from .estimate import BandwidthEstimator
from .resend import ResendBudget

NACKED_REMEMBERED = 4096
"""Packets remembered as NACKed already, per pupil (a few seconds of their streams)."""


class PupilFeedback:
    """One pupil's estimate, retransmission budget and what their receiver reports say."""

    def __init__(
        self, sent_bytes: Callable[[], int], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._sent_bytes = sent_bytes
        self.estimator = BandwidthEstimator(clock())
        self.budget = ResendBudget()
        self.lost: dict[int, int] = {}
        """Per SSRC, the packets the pupil reported lost so far (cumulative, RFC 3550)."""
        self.nacked = 0
        """Packets the pupil NACKed so far (each once, answered or not): a loss signal within
        one RTT."""
        self._nacked_keys: OrderedDict[tuple[int, int], None] = OrderedDict()
        self.pacing_bps = 0
        """The pupil's pacing rate (set by ``control``), which the resend budget may use."""
        self._remb_keys: list[frozenset[int]] = []
        """The lists of streams the pupil's REMBs are about (disjoint; see :meth:`_remb_key`)."""

    def on_rtcp(self, ssrc: int, packet: Any, rtt: float | None, packet_size: float = 0.0) -> None:
        """An RTCP packet aiortc routed to our sender of ``ssrc`` (after aiortc handled it;
        ``rtt``: aiortc's round-trip time for that sender, seconds; ``packet_size``: the mean
        payload of that sender's packets, bytes)."""
        now = self._clock()
        if isinstance(packet, aiortc_rtp.RtcpRrPacket | aiortc_rtp.RtcpSrPacket):
            for report in packet.reports:
                if report.ssrc != ssrc:
                    continue
                lost = int(report.packets_lost)
                self.lost[ssrc] = max(lost, 0)
                self.estimator.on_report(
                    now,
                    ssrc,
                    report.fraction_lost,
                    report.highest_sequence,
                    self._sent_bytes(),
                    lost,
                    packet_size,
                )
                if rtt is not None:
                    self.estimator.on_rtt(rtt)
        elif (
            isinstance(packet, aiortc_rtp.RtcpPsfbPacket) and packet.fmt == aiortc_rtp.RTCP_PSFB_APP
        ):
            try:
                bitrate, ssrcs = aiortc_rtp.unpack_remb_fci(packet.fci)
            except ValueError:  # another application's message: not ours
                return
            if ssrc in ssrcs:  # the same REMB reaches each stream it names: idempotent
                self.estimator.on_remb(now, bitrate, self._remb_key(ssrcs))

    def _remb_key(self, ssrcs: list[int]) -> tuple[int, ...]:
        """The streams a REMB is about, as the estimator keys them (it sums the latest REMB of
        each key). A browser sends one REMB for all the pupil's streams and names in it every
        stream it received lately, so the list changes: Firefox adds the camera's RTX stream
        while the kit probes with RTX padding and drops it after ({camera, document} then
        {camera, RTX, document}: summed apart, the ceiling read ~2× Firefox's REMB, measured
        705 kbit/s for a REMB of 389). So a REMB naming any stream of an earlier REMB's list
        takes that list's key; aiortc's REMBs, one per stream, never overlap and still add up.
        Each key holds one of the pupil's streams (the caller checks) and keys are disjoint: at
        most one per stream, whatever lists a pupil sends."""
        named = frozenset(ssrcs)
        for key in self._remb_keys:
            if key & named:
                return tuple(sorted(key))
        self._remb_keys.append(named)
        return tuple(sorted(named))

    def estimate(self) -> int:
        """The pupil's estimate in bit/s."""
        return self.estimator.estimate(self._clock())

    def admit_resend(self, ssrc: int, seq: int, size: int) -> bool:
        """Whether the NACK path may resend this packet now (counted if so). The budget is a
        share of the estimate, or of the pupil's pacing rate when higher (a probe: the losses
        its overshoot caused are the kit's to repair; measured at 1.5 Mbit/s, a probe to
        2 Mbit/s lost ~70 packets and, held to 15 % of the estimate, 66 NACKs went unanswered
        and an aiortc pupil's picture froze 4.8 s)."""
        now = self._clock()
        self._count_nacked(ssrc, seq)
        rate = max(self.estimator.estimate(now), self.pacing_bps)
        return self.budget.admit(now, ssrc, seq, size, rate, self.estimator.rtt)

    def _count_nacked(self, ssrc: int, seq: int) -> None:
        """Count a packet NACKed for the first time (browsers NACK a missing packet again
        every RTT or so: one loss, many NACKs)."""
        key = (ssrc, seq)
        if key in self._nacked_keys:
            return
        self._nacked_keys[key] = None
        if len(self._nacked_keys) > NACKED_REMEMBERED:
            self._nacked_keys.popitem(last=False)
        self.nacked += 1

    def stats(self) -> dict[str, Any]:
        """The pupil's figures for ``/api/status``."""
        estimator, budget = self.estimator, self.budget
        loss, rtt = estimator.loss, estimator.rtt
        return {
            "estimate_kbps": round(self.estimate() / 1000),
            "remb_kbps": round(estimator.remb / 1000) if estimator.remb is not None else None,
            "loss_percent": round(100 * loss, 2) if loss is not None else None,
            "rtt_ms": round(1000 * rtt, 1) if rtt is not None else None,
            "resent_bytes": budget.resent_bytes,
            "resent_packets": budget.resent_packets,
            "nacks_ignored": budget.ignored,
            "nacks_over_budget": budget.ignored_budget,
        }
