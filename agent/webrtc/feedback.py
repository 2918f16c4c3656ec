"""What one pupil's browser tells the kit about its link, and what the kit makes of it.

:class:`PupilFeedback` is one per pupil (one peer connection), shared by its senders. It takes
the RTCP aiortc has parsed for those senders (receiver report blocks, REMB; ``rtpsend`` hands
them over after aiortc's own handling, which measured the RTT) into the pupil's
:class:`~.estimate.BandwidthEstimator`, and answers the NACK path's question "resend this
packet?" from its :class:`~.resend.ResendBudget`. Nothing here runs per sent packet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiortc import rtp as aiortc_rtp

from .estimate import BandwidthEstimator
from .resend import ResendBudget


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
                self.estimator.on_remb(now, bitrate, tuple(ssrcs))

    def estimate(self) -> int:
        """The pupil's estimate in bit/s."""
        return self.estimator.estimate(self._clock())

    def admit_resend(self, ssrc: int, seq: int, size: int) -> bool:
        """Whether the NACK path may resend this packet now (counted if so)."""
        now = self._clock()
        estimate = self.estimator.estimate(now)
        return self.budget.admit(now, ssrc, seq, size, estimate, self.estimator.rtt)

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
