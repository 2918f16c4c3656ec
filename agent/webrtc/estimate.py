"""A pupil's bandwidth estimate, from what their browser reports: pure logic, time injected.

Inputs, all per pupil (one peer connection: the room camera, the document camera and the sound
share one path, so one estimate):

- REMB (``goog-remb``): the receiver's own delay-based estimate of what it can take, computed
  from the ``abs-send-time`` the kit stamps on every packet (at the time each paced run of
  packets leaves). Recorded and shown; a falling REMB ends a probe (below).
- receiver report blocks (RFC 3550): per stream, the fraction lost since the last report and
  the extended highest sequence number (how many packets the fraction is of); the round-trip
  time is measured by aiortc from the LSR/DLSR fields and passed in.
- what the kit sent to this pupil (bytes, a running total), to know whether the estimate was
  probed at all and what actually got through.

The loss controller is Galène's (``rtpconn.updateRate``, itself Chrome's former send-side
loss controller): under 2 % loss the estimate grows ~5 % per step — only while the kit really
sends at ≥ 3/4 of it (otherwise nothing was probed) —, over 10 % it is multiplied by
``1 − loss/2``, between the two it holds.

Three departures, each measured or forced by the layers (docs/adaptation.md):

- **Under 2 % loss, what was sent went through**: the estimate rises to the rate sent over the
  step — media and the probe padding of ``allocate``/``pacer`` — up to twice itself per step.
  Galène's 5 % a step needs ~40 s from the safe start to an unshaped pupil's 4 Mbit/s, and a
  pupil on a cheap layer never sends ¾ of what the next layer needs.
- **REMB is no ceiling.** Galène caps the estimate at REMB. Browsers' and aiortc's REMB grows
  ~8 % a second from what they received, so as a ceiling it held a probing pupil at what they
  had received; even as a ceiling only while falling and losing, and never below what got
  through, it cut pupils to the media they were being sent after each probe's overshoot, and
  aiortc's swings without loss (5.5 Mbit/s, then 387 kbit/s a second later on a 1.5 Mbit/s
  link). A falling REMB (:meth:`BandwidthEstimator.remb_fell`) still ends a probe
  (``control``): the receiver's queue is growing.
- **What got through also counts** (this came first, before the kit sent less when the
  estimate fell: on an 800 kbit/s link it pushed 2.5–3.7 Mbit/s, lost 50–78 %, and Galène's
  rule alone walks the estimate down to its floor): the packets the pupil's
reports say it received (Δ highest sequence − Δ cumulative lost, per stream) × that stream's
mean payload, smoothed over steps (bursts and the timing of reports make it swing by ×3; the
first step counts at most the estimate, so a join's keyframe burst does not set it), whatever
the loss: the path did carry it (over 10 % loss the link is saturated and that is its capacity;
between 2 and 10 % a merely lossy link — 5 % random loss — is not held at the safe start,
which starved its retransmissions; under 2 % an unshaped pupil goes from the safe start to what
it receives in a few steps, not ~40 s of 5 % growth). Two variants were measured and dropped:
``sent × (1 − fraction lost)`` read ~1 Mbit/s through an 800 kbit/s link (the fractions are
per packet and over other intervals), and letting what got through only hold the estimate up
ratcheted it down on noise (147 kbit/s for the same link).

Without any usable feedback (no report for ``FEEDBACK_TIMEOUT_S``), the estimate is the safe
start, :data:`START_BPS`.
"""

from __future__ import annotations

from dataclasses import dataclass

START_BPS = 1_000_000
"""The safe start: enough for the middle quality and the sound (issue 14: 640×360@30
~450 kbit/s, the document's legible low layer ~300 kbit/s, Opus ~50 kbit/s, the headers, and
the 10 % margin before a level is left), little enough for a 4G or ADSL pupil to recover from.
Galène starts at 512 kbit/s per track."""
MIN_BPS = 64_000
"""Never below: the sound (Opus ~32–64 kbit/s) must always fit."""
MAX_BPS = 50_000_000
LOW_LOSS = 0.02
HIGH_LOSS = 0.10
GROWTH = 1.05
"""Per step under :data:`LOW_LOSS` (Galène: ×269/256 per report)."""
STEP_S = 0.5
"""Report blocks are gathered for at least this long before a step (a pupil's streams report
each ~1 s, at different times: one step per round of reports, not one per stream)."""
FEEDBACK_TIMEOUT_S = 30.0
"""Reports older than this no longer count (Galène's ``receiverReportTimeout``)."""
DELIVERED_WEIGHT = 0.3
"""Weight of the latest step in the smoothed rate that got through."""
REMB_TIMEOUT_S = 10.0
"""A REMB older than this no longer counts (browsers send one every ~1 s)."""
REMB_FALL = 0.97
"""A REMB under this share of the one before says "less": the receiver saw its queue grow."""
REMB_HOLD_S = 4.0
"""How long a REMB counts as having fallen (``remb_fell``) after it fell."""
FORGIVE_S = 2.0
"""After a failed probe, how long the reports' loss is put down to it (they come ~1 s late)."""
MAX_STEP_GROWTH = 2.0
"""What was sent without loss counts up to this multiple of the estimate per step (a probe
doubles; a join's keyframes sent in one step do not set it)."""


@dataclass(slots=True)
class _Stream:
    highest: int | None = None
    """Extended highest sequence number of its last report."""
    lost: int | None = None
    """Cumulative packets lost of its last report."""


class BandwidthEstimator:
    """One pupil's estimate in bit/s; feed it, then read :meth:`estimate`."""

    def __init__(self, now: float) -> None:
        self._rate = float(START_BPS)
        self._rembs: dict[frozenset[int], tuple[float, int]] = {}
        self._remb_fell_at: float | None = None
        self._forgiven_until = float("-inf")
        self._delivered: float | None = None
        self._report_at: float | None = None
        self._step_at = now
        self._step_sent: int | None = None
        self._streams: dict[int, _Stream] = {}
        self._lost = 0.0  # packets lost (weighted fractions) since the last step
        self._expected = 0.0
        self._received = 0.0  # bytes the pupil received since the last step, by its reports
        self._received_known = False
        self.loss: float | None = None
        """Loss of the last step (0–1), over all the pupil's streams; None before a report."""
        self.rtt: float | None = None
        """Round-trip time in seconds (the latest measured), None until measured."""
        self.remb: int | None = None
        """The latest REMB in bit/s, None if none came."""

    def on_remb(self, now: float, bitrate: int, ssrcs: tuple[int, ...] = ()) -> None:
        """A REMB (bit/s) for the pupil's streams ``ssrcs``; a bad value (≤ 0) is ignored.

        A REMB's bitrate covers the streams it lists: Chromium sends one for all, aiortc one
        per video stream, so the pupil's REMB is the sum of the latest REMB of each distinct
        list."""
        if bitrate <= 0:
            return
        before = self._fresh_remb(now)
        self._rembs[frozenset(ssrcs)] = (now, bitrate)
        remb = self._fresh_remb(now)
        assert remb is not None
        self.remb = remb
        if before is not None and remb < before * REMB_FALL:
            self._remb_fell_at = now

    def on_rtt(self, rtt: float) -> None:
        """A round-trip time measured from a report's LSR/DLSR; implausible ones ignored."""
        if 0.0 <= rtt < 10.0:
            self.rtt = rtt

    def on_report(
        self,
        now: float,
        ssrc: int,
        fraction_lost: int,
        highest: int,
        sent: int,
        lost: int | None = None,
        packet_size: float = 0.0,
    ) -> None:
        """One report block about one of the pupil's streams.

        ``fraction_lost`` is the RFC 3550 8-bit fraction, ``highest`` the extended highest
        sequence number received, ``sent`` the bytes sent to the pupil so far (all streams);
        ``lost`` (the block's cumulative packets lost) and ``packet_size`` (the stream's mean
        payload) give what the pupil received, in bytes: the measure of what got through.
        """
        self._forget_if_silent(now)
        stream = self._streams.setdefault(ssrc, _Stream())
        expected = 1.0
        if stream.highest is not None and 0 < highest - stream.highest < 100_000:
            expected = float(highest - stream.highest)
        elif stream.highest is not None:
            expected = 0.0  # a repeated or reordered report: its loss is counted already
        if lost is not None and stream.lost is not None and stream.highest is not None:
            received = min(max(expected - (lost - stream.lost), 0.0), expected)
            self._received += received * packet_size
            self._received_known = True
        stream.highest, stream.lost = highest, lost
        self._lost += expected * min(max(fraction_lost, 0), 255) / 256
        self._expected += expected
        self._report_at = now
        if self._step_sent is None:
            self._step_at, self._step_sent = now, sent
            return
        if now - self._step_at >= STEP_S and self._expected > 0:
            self._step(now, sent)

    def _step(self, now: float, sent: int) -> None:
        assert self._step_sent is not None
        loss = self._lost / self._expected
        sent_bps = 8 * max(sent - self._step_sent, 0) / (now - self._step_at)
        if self._received_known:  # what the pupil says it received
            delivered = 8 * self._received / (now - self._step_at)
        else:
            delivered = sent_bps * (1 - loss)
        self._received, self._received_known = 0.0, False
        if self._delivered is None:  # a join's keyframe burst must not set it
            self._delivered = min(delivered, self._rate)
        else:
            delivered = (1 - DELIVERED_WEIGHT) * self._delivered + DELIVERED_WEIGHT * delivered
            self._delivered = delivered
        rate = self._rate
        if loss < LOW_LOSS and sent_bps >= rate * 3 / 4:
            rate *= GROWTH
        elif loss > HIGH_LOSS and now >= self._forgiven_until:
            rate *= 1 - loss / 2
        if loss < LOW_LOSS:  # what was sent (media and probe padding) went through
            rate = max(rate, min(sent_bps, self._rate * MAX_STEP_GROWTH))
        if now < self._forgiven_until:
            rate = max(rate, self._rate)  # the kit's own probe lost those packets
        rate = max(rate, self._delivered)  # what got through, the path did carry
        self._rate = min(max(rate, MIN_BPS), MAX_BPS)
        self.loss = loss
        self._lost = self._expected = 0.0
        self._step_at, self._step_sent = now, sent

    def probe_failed(self, now: float, rate: int) -> None:
        """A probe of the kit's overshot the pupil's link: back to ``rate`` (the estimate
        before it), and the loss its reports show over the next ``FORGIVE_S`` is the probe's,
        not the link's (measured at 1.5 Mbit/s: a probe to 2 Mbit/s lost ~20 %, the loss rule
        halved the estimate and the pupil went down to the room camera's low layer)."""
        self._rate = max(float(rate), MIN_BPS)
        self._forgiven_until = now + FORGIVE_S

    def remb_fell(self, now: float, since: float | None = None) -> bool:
        """Whether a REMB fell within ``REMB_HOLD_S`` (or since ``since``)."""
        fell = self._remb_fell_at
        if fell is None:
            return False
        return fell >= since if since is not None else now - fell <= REMB_HOLD_S

    def _fresh_remb(self, now: float) -> int | None:
        fresh = [rate for at, rate in self._rembs.values() if now - at <= REMB_TIMEOUT_S]
        return sum(fresh) if fresh else None

    def estimate(self, now: float) -> int:
        """The estimate in bit/s: the safe start without recent reports."""
        if self._report_at is None or now - self._report_at > FEEDBACK_TIMEOUT_S:
            rate = float(START_BPS)
        else:
            rate = self._rate
        return int(rate)

    def _forget_if_silent(self, now: float) -> None:
        """After ``FEEDBACK_TIMEOUT_S`` without a report, start safe again."""
        if self._report_at is not None and now - self._report_at > FEEDBACK_TIMEOUT_S:
            self._rate = float(START_BPS)
            self._report_at = None
            self._step_sent = None
            self._lost = self._expected = self._received = 0.0
