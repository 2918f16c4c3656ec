"""agent/webrtc/estimate.py message in, decision out: reports, REMB and bytes sent in, the
pupil's estimate out, with the clock injected."""

from __future__ import annotations

import pytest

from agent.webrtc import estimate
from agent.webrtc.estimate import START_BPS, BandwidthEstimator

SSRC = 0x1111


class Pupil:
    """An estimator fed one report a second of a stream of 100 packets a second, while the kit
    sends ``send_bps``; the link loses ``loss`` of them."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sent = 0
        self.highest = 1000
        self.est = BandwidthEstimator(self.now)

    def second(self, send_bps: float, loss: float, remb: int | None = None) -> int:
        self.now += 1.0
        self.sent += int(send_bps / 8)
        self.highest += 100
        if remb is not None:
            self.est.on_remb(self.now, remb)
        self.est.on_report(self.now, SSRC, round(256 * loss), self.highest, self.sent)
        return self.est.estimate(self.now)


def test_nothing_usable_means_the_safe_start() -> None:
    est = BandwidthEstimator(0.0)
    assert est.estimate(0.0) == est.estimate(100.0) == START_BPS
    assert est.loss is None and est.rtt is None and est.remb is None


def test_grows_slowly_under_two_percent_loss_while_probed() -> None:
    pupil = Pupil()
    pupil.second(START_BPS, 0.0)  # the first report only sets the baseline
    rates = [pupil.second(pupil.est.estimate(pupil.now), 0.01) for _ in range(5)]
    assert rates[0] == pytest.approx(START_BPS * 1.05, rel=0.01)
    assert rates[-1] == pytest.approx(START_BPS * 1.05**5, rel=0.01)


def test_does_not_grow_when_the_kit_did_not_send_near_it() -> None:
    pupil = Pupil()
    pupil.second(100_000, 0.0)
    assert [pupil.second(100_000, 0.0) for _ in range(3)] == [START_BPS] * 3


def test_what_got_through_without_loss_is_reached_in_a_few_steps() -> None:
    """An unshaped pupil receiving the full 3.7 Mbit/s: not 40 s of 5 % steps."""
    pupil = Pupil()
    pupil.second(3_700_000, 0.0)
    rates = [pupil.second(3_700_000, 0.0) for _ in range(8)]
    assert rates[0] == START_BPS * 2  # at most doubled per step: a join's burst does not set it
    assert rates[2] >= 3_500_000


def test_holds_between_two_and_ten_percent() -> None:
    pupil = Pupil()
    pupil.second(START_BPS, 0.0)
    assert [pupil.second(START_BPS, 0.05) for _ in range(3)] == [START_BPS] * 3


def test_a_merely_lossy_link_is_not_held_below_what_it_carries() -> None:
    """5 % random loss, 1.2 Mbit/s sent: held at the safe start, the pupil's retransmission
    budget (a share of the estimate) starved its repairs."""
    pupil = Pupil()
    pupil.second(1_200_000, 0.0)
    rates = [pupil.second(1_200_000, 0.05) for _ in range(10)]
    assert rates[-1] == pytest.approx(1_140_000, rel=0.03)


def test_backs_off_over_ten_percent_by_half_the_loss() -> None:
    pupil = Pupil()
    pupil.second(START_BPS, 0.0)
    assert pupil.second(START_BPS / 2, 0.20) == pytest.approx(START_BPS * 0.9, rel=0.01)


def test_an_overflowing_link_settles_on_what_got_through() -> None:
    """The kit keeps sending 3.7 Mbit/s into an 800 kbit/s link (~78 % lost): Galène's rule
    alone would walk the estimate down to its floor; what got through holds it."""
    pupil = Pupil()
    pupil.second(3_700_000, 0.0)
    rates = [pupil.second(3_700_000, 1 - 800 / 3700) for _ in range(20)]
    assert rates[-1] == pytest.approx(800_000, rel=0.02)


def test_a_saturated_link_recovers_from_a_noisy_step() -> None:
    """Loss and send rate are measured over unaligned intervals: one step can say far less got
    through than did; the estimate must come back, not stay ratcheted down."""
    pupil = Pupil()
    pupil.second(3_700_000, 0.0)
    pupil.second(3_700_000, 0.97)  # ~110 kbit/s got through, by this step's figures
    low = pupil.est.estimate(pupil.now)
    rates = [pupil.second(3_700_000, 1 - 800 / 3700) for _ in range(15)]
    assert low < 600_000 and rates[-1] == pytest.approx(800_000, rel=0.05)


def test_remb_is_no_ceiling_but_its_fall_is_noted() -> None:
    """A receiver's REMB grows ~8 % a second from what it received and aiortc's swings; the
    loss controller sets the estimate, a falling REMB only ends a probe (allocate, control)."""
    pupil = Pupil()
    pupil.second(3_700_000, 0.0, remb=4_000_000)
    assert not pupil.est.remb_fell(pupil.now)
    pupil.second(3_700_000, 0.0, remb=1_000_000)  # fell: the receiver saw its queue grow
    fell_at = pupil.now
    assert pupil.est.remb_fell(pupil.now) and pupil.est.remb_fell(pupil.now, since=fell_at)
    assert not pupil.est.remb_fell(pupil.now, since=fell_at + 0.1)
    rates = [pupil.second(3_700_000, 0.0, remb=1_000_000) for _ in range(3)]
    assert rates[-1] >= 3_500_000 and pupil.est.remb == 1_000_000
    pupil.now += estimate.REMB_HOLD_S
    assert not pupil.est.remb_fell(pupil.now)


def test_a_remb_that_merely_lags_is_not_a_fall() -> None:
    pupil = Pupil()
    pupil.second(800_000, 0.0, remb=900_000)
    for i in range(4):
        pupil.second(2_000_000, 0.0, remb=900_000 + 70_000 * i)
    assert not pupil.est.remb_fell(pupil.now)


def test_remb_expires() -> None:
    est = BandwidthEstimator(0.0)
    est.on_remb(0.0, 1_000_000, (1,))
    est.on_remb(estimate.REMB_TIMEOUT_S + 1, 500_000, (2,))  # the first one is too old
    assert est.remb == 500_000


def test_remb_of_each_list_of_streams_adds_up() -> None:
    """Chromium sends one REMB for all the pupil's streams, aiortc one per video stream."""
    est = BandwidthEstimator(0.0)
    est.on_report(0.0, SSRC, 0, 1000, 0)
    est.on_remb(0.0, 3_000_000, (1,))
    est.on_remb(0.1, 700_000, (2,))
    assert est.remb == 3_700_000
    est.on_remb(0.2, 400_000, (2,))  # the newer REMB for the same stream replaces it
    assert est.remb == 3_400_000 and est.estimate(0.2) == START_BPS  # no ceiling


def test_bad_values_are_ignored() -> None:
    est = BandwidthEstimator(0.0)
    est.on_remb(0.0, 0)
    est.on_rtt(-1.0)
    est.on_rtt(60.0)
    assert est.remb is None and est.rtt is None and est.estimate(0.0) == START_BPS
    est.on_remb(0.0, 10)  # absurdly low: recorded, no ceiling
    assert est.remb == 10 and est.estimate(0.0) == START_BPS
    est.on_rtt(0.05)
    assert est.rtt == 0.05


def test_reports_of_several_streams_are_weighted_by_their_packets() -> None:
    est = BandwidthEstimator(0.0)
    est.on_report(0.0, 1, 0, 1000, 0)
    est.on_report(0.0, 2, 0, 5000, 0)
    est.on_report(0.3, 2, 0, 5100, 30_000)  # the sound's 100, none lost
    est.on_report(1.0, 1, 256 // 2, 1900, 100_000)  # 900 packets, half lost: a step
    assert est.loss == pytest.approx(450 / 1002, abs=0.001)  # (the baselines weigh 1 each)


def test_a_repeated_report_does_not_count_twice() -> None:
    est = BandwidthEstimator(0.0)
    est.on_report(0.0, SSRC, 0, 1000, 0)
    est.on_report(0.1, SSRC, 255, 1000, 0)  # same highest sequence: nothing new
    est.on_report(1.0, SSRC, 0, 1100, 100_000)
    assert est.loss == 0.0


def test_silence_brings_back_the_safe_start() -> None:
    pupil = Pupil()
    pupil.second(3_700_000, 0.0)
    assert pupil.second(3_700_000, 0.0) > START_BPS
    assert pupil.est.estimate(pupil.now + estimate.FEEDBACK_TIMEOUT_S + 1) == START_BPS
    pupil.now += estimate.FEEDBACK_TIMEOUT_S + 1
    assert pupil.second(3_700_000, 0.0) == START_BPS  # a new baseline first


def test_what_got_through_is_what_the_pupil_says_it_received() -> None:
    """Per-packet fractions over other intervals misread a saturated link (~1 Mbit/s through
    800 kbit/s, measured): the packets received by the reports' counters × their size count."""
    est = BandwidthEstimator(0.0)
    sent, highest, lost = 0, 0, 0
    for second in range(1, 30):
        sent += 3_700_000 // 8  # 3.7 Mbit/s sent in packets of 1,000 bytes
        highest += 462
        lost += 362  # 100 packets, 800 kbit/s, got through
        fraction = 128  # but the fractions say half
        est.on_report(float(second), SSRC, fraction, highest, sent, lost, 1000.0)
    assert est.estimate(29.0) == pytest.approx(800_000, rel=0.02)


def test_the_loss_a_failed_probe_caused_is_forgiven() -> None:
    """The kit's own probe overshot the link: back to the estimate before it, and the reports'
    loss that follows (they come ~1 s late) does not cut it."""
    pupil = Pupil()
    pupil.second(1_400_000, 0.0)
    before = [pupil.second(1_400_000, 0.0) for _ in range(3)][-1]
    pupil.second(2_000_000, 0.25)  # the probe's loss shows up: cut
    assert pupil.est.estimate(pupil.now) < before
    pupil.est.probe_failed(pupil.now, before)
    assert pupil.est.estimate(pupil.now) == before
    pupil.now -= 0.5
    assert pupil.second(1_400_000, 0.25) >= before  # late reports of the same loss: forgiven
    pupil.now += estimate.FORGIVE_S
    assert pupil.second(1_400_000, 0.25) < before  # loss after that is the link's again
