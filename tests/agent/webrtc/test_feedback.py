"""agent/webrtc/feedback.py: the NACK path's figures (message in, figures out, clock injected)."""

from __future__ import annotations

from agent.webrtc import resend
from agent.webrtc.feedback import PupilFeedback

CAMERA = 1234


def test_a_packet_nacked_again_counts_once() -> None:
    """Browsers NACK a missing packet again every RTT or so; a probe ends on the number of
    packets lost, not on how often the pupil asked."""
    now = [10.0]
    feedback = PupilFeedback(lambda: 0, clock=lambda: now[0])
    for _ in range(5):
        feedback.admit_resend(CAMERA, 100, 1200)
        now[0] += 0.1
    feedback.admit_resend(CAMERA, 101, 1200)
    feedback.admit_resend(CAMERA + 1, 100, 1200)  # another stream's packet 100
    assert feedback.nacked == 3


def test_the_resend_budget_follows_the_pacing_rate_while_probing() -> None:
    """A probe's overshoot is the kit's to repair: the budget is a share of the estimate, or of
    the pacing rate when that is higher."""
    now = [10.0]
    feedback = PupilFeedback(lambda: 0, clock=lambda: now[0])
    estimate = feedback.estimate()
    allowed = int(resend.FRACTION * estimate / 8 * resend.WINDOW_S)
    packets = allowed // 1200
    assert all(feedback.admit_resend(CAMERA, seq, 1200) for seq in range(packets))
    assert not feedback.admit_resend(CAMERA, packets, 1200)  # over the estimate's budget
    feedback.pacing_bps = 2 * estimate  # probing at twice the estimate
    assert feedback.admit_resend(CAMERA, packets + 1, 1200)
