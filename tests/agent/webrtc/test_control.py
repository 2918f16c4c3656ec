"""agent/webrtc/control.py with the clock and the estimate injected: the pacer's bucket follows
the pupil's level and the room their link showed (a bigger one only on the top level with room
to spare, see pacer.HEADROOM_BURST_S)."""

from __future__ import annotations

from typing import Any

from agent.config import VideoSourceConfig
from agent.media.layers import layers_of
from agent.webrtc.allocate import DOWN_FRACTION
from agent.webrtc.control import PACE_OVER_LEVEL, TICK_S, PupilControl
from agent.webrtc.pacer import BURST_S, HEADROOM_BURST_S, MIN_BURST


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Estimator:
    loss = 0.0

    def remb_fell(self, now: float, since: float) -> bool:
        return False

    def probe_failed(self, now: float, rate: float) -> None:
        pass


class Feedback:
    """A pupil whose estimate is what the test says."""

    def __init__(self, estimate_bps: int) -> None:
        self.estimate_bps = estimate_bps
        self.estimator = Estimator()
        self.nacked = 0
        self.pacing_bps = 0

    def estimate(self) -> int:
        return self.estimate_bps


def a_pupil(estimate_bps: int, cap_bps: int = 0, then_bps: int = 0) -> PupilControl:
    """A pupil after 20 s of ticks at ``estimate_bps`` (and a share ``cap_bps`` of the uplink),
    then 2 s at ``then_bps`` if given."""
    layers = {
        "camera": layers_of("camera", VideoSourceConfig()),
        "document": layers_of("document", VideoSourceConfig(width=1920, height=1080, fps=15)),
    }
    clock = Clock()
    feedback: Any = Feedback(estimate_bps)
    control = PupilControl(layers, 48_000, feedback, clock)
    control.cap_bps = cap_bps
    for seconds, bps in ((20.0, estimate_bps), (2.0 if then_bps else 0.0, then_bps)):
        feedback.estimate_bps = bps
        for _ in range(int(seconds / TICK_S)):
            clock.now += TICK_S
            control.tick()
    return control


def bucket_s(control: PupilControl) -> float:
    return control.pacer.burst / (control.pacer.rate_bps / 8)


def test_a_good_home_link_on_the_top_level_gets_the_bigger_bucket() -> None:
    control = a_pupil(6_500_000)
    assert control.choice.top
    assert control.pacer.rate_bps == 6_500_000
    assert abs(bucket_s(control) - HEADROOM_BURST_S) < 1e-9


def test_a_thin_link_keeps_the_small_bucket() -> None:
    control = a_pupil(1_500_000)
    assert not control.choice.top
    assert control.pacer.burst == max(control.pacer.rate_bps / 8 * BURST_S, MIN_BURST)


def test_the_top_level_without_room_to_spare_keeps_the_small_bucket() -> None:
    """Just enough for the top level (the pacer runs at its floor, not at the estimate), or a
    share of the school's uplink that leaves no room: the link is full, a burst would queue."""
    top = a_pupil(6_500_000).choice.levels[-1].bps
    just_enough = a_pupil(6_500_000, then_bps=int(top / DOWN_FRACTION) + 1000)
    assert just_enough.choice.top
    assert abs(bucket_s(just_enough) - BURST_S) < 1e-9
    shared = a_pupil(6_500_000, cap_bps=top + 1000)
    assert shared.choice.top
    assert abs(bucket_s(shared) - BURST_S) < 1e-9
    roomy_share = a_pupil(6_500_000, cap_bps=int(top * PACE_OVER_LEVEL) + 1000)
    assert abs(bucket_s(roomy_share) - HEADROOM_BURST_S) < 1e-9
