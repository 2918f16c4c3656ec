"""agent/webrtc/allocate.py: estimates in, levels and probe rates out, with the clock injected."""

from __future__ import annotations

import pytest

from agent.config import VideoSourceConfig
from agent.media.layers import layers_of
from agent.webrtc import allocate
from agent.webrtc.allocate import LayerChoice, ladder, start_index

CAMERA = layers_of("camera", VideoSourceConfig())
DOCUMENT = layers_of(
    "document", VideoSourceConfig(width=1920, height=1080, fps=15, bitrate_kbps=2000)
)
LEVELS = ladder(CAMERA, DOCUMENT, 48_000)


def names(choice: LayerChoice | allocate.Level) -> tuple[str | None, str | None]:
    level = choice.level if isinstance(choice, LayerChoice) else choice
    return level.camera, level.document


def test_the_ladder_gives_way_document_first_and_keeps_the_sound() -> None:
    assert [(level.camera, level.document) for level in LEVELS] == [
        ("paused", "paused"),
        ("low", "paused"),
        ("low", "keyframes"),
        ("low", "low"),
        ("mid", "low"),
        ("high", "low"),
        ("high", "high"),
    ]
    costs = [level.bps for level in LEVELS]
    assert costs == sorted(costs) and costs[0] >= 48_000  # the sound is in every level
    assert LEVELS[start_index(LEVELS)].camera == "mid"  # the safe start: the middle layer


def test_without_a_camera_the_ladder_is_the_other_one_and_the_sound() -> None:
    only_document = ladder((), DOCUMENT, 48_000)
    assert [(level.camera, level.document) for level in only_document] == [
        (None, "paused"),
        (None, "keyframes"),
        (None, "low"),
        (None, "high"),
    ]
    assert [(level.camera, level.document) for level in ladder((), (), 48_000)] == [(None, None)]


def test_down_at_once_up_only_after_holding() -> None:
    choice = LayerChoice(LEVELS, 0.0)
    assert names(choice) == ("mid", "low")
    assert names(choice.update(0.1, 600_000)) == ("low", "low")  # at once
    assert choice.update(0.2, 10_000_000).camera == "low"  # not yet
    assert choice.update(0.2 + allocate.UP_HOLD_S + 0.01, 10_000_000) == LEVELS[-1]  # all up


def test_a_wobbling_estimate_does_not_flap() -> None:
    """Between the up and the down thresholds nothing moves."""
    choice = LayerChoice(LEVELS, 0.0)
    mid = choice.level
    for i in range(100):
        estimate = int(mid.bps / 0.85) + (20_000 if i % 2 else -20_000)
        assert choice.update(i * 0.25, estimate) == mid


def test_an_up_switch_undone_at_once_doubles_the_hold() -> None:
    choice = LayerChoice(LEVELS, 0.0)
    high = LEVELS[-2]
    now = 0.0
    hold = allocate.UP_HOLD_S
    for expected_hold in (hold, 2 * hold, 4 * hold):
        choice.update(now, int(high.bps / 0.7))
        now += expected_hold - 0.01
        assert choice.update(now, int(high.bps / 0.7)).camera != "high", expected_hold
        now += 0.02
        assert choice.update(now, int(high.bps / 0.7)).camera == "high"
        now += 1.0
        assert choice.update(now, 900_000).camera == "low"  # it did not hold
        now += 0.1


def test_the_uplink_share_is_a_hard_cap() -> None:
    choice = LayerChoice(LEVELS, 0.0)
    share = LEVELS[4].bps  # exactly the middle layer
    assert choice.update(0.0, 50_000_000, share) == LEVELS[4]
    assert choice.update(10.0, 50_000_000, share) == LEVELS[4]
    assert choice.probe(10.0, 50_000_000, 0.0, share) == 0  # no probing past the share
    assert choice.update(11.0, 50_000_000, share - 1).camera == "low"


def test_probes_double_while_they_work_then_grow_slowly_and_back_off() -> None:
    choice = LayerChoice(LEVELS, 0.0)
    assert choice.probe(allocate.PROBE_WAIT_S - 0.1, 1_000_000, None) == 0  # a moment first
    first = choice.probe(1.0, 1_000_000, 0.0)
    assert first == 2_000_000 and choice.probing
    assert choice.probe(1.5, 1_900_000, 0.0) == 3_800_000  # reached: the next one at once
    assert choice.probe(2.0, 2_000_000, 0.0) == 3_800_000  # still within PROBE_S
    padded = 1.5 + allocate.PROBE_S
    assert choice.probe(padded, 2_000_000, 0.0) == 0  # padding over: the reports may lag
    assert choice.probing
    judged = 1.5 + allocate.PROBE_S + allocate.PROBE_JUDGE_S
    assert choice.probe(judged, 2_000_000, 0.0) == 0 and not choice.probing  # failed: wait
    first = allocate.FIRST_FAILED_PROBE_WAIT_S
    assert choice.probe(judged + first - 0.1, 2_000_000, 0.0) == 0
    assert choice.probe(judged + first, 2_000_000, 0.0) == 2_400_000  # now × 1.2
    again = judged + first + allocate.PROBE_S + allocate.PROBE_JUDGE_S
    wait = allocate.FAILED_PROBE_WAIT_S
    assert choice.probe(again, 2_000_000, 0.0) == 0  # failed again: a long wait
    assert choice.probe(again + wait - 0.1, 2_000_000, 0.0) == 0
    assert choice.probe(again + wait, 2_000_000, 0.0) == 2_400_000
    third = again + wait + allocate.PROBE_S + allocate.PROBE_JUDGE_S
    assert choice.probe(third, 2_000_000, 0.0) == 0  # and twice as long after the third
    assert choice.probe(third + 2 * wait - 0.1, 2_000_000, 0.0) == 0
    assert choice.probe(third + 2 * wait, 2_000_000, 0.0) == 2_400_000


def test_reports_that_come_after_the_padding_still_count() -> None:
    choice = LayerChoice(LEVELS, 0.0)
    assert choice.probe(1.0, 1_000_000, 0.0) == 2_000_000
    padded = 1.0 + allocate.PROBE_S
    assert choice.probe(padded, 1_000_000, 0.0) == 0  # padding over, no report yet
    assert choice.probe(padded + 0.9, 1_800_000, 0.0) == 3_600_000  # it carried: the next one


def test_a_probe_ends_at_once_on_loss_or_a_falling_remb() -> None:
    choice = LayerChoice(LEVELS, 0.0)
    assert choice.probe(1.0, 1_000_000, 0.0) == 2_000_000
    assert choice.probe(1.2, 1_000_000, 0.05) == 0  # the step lost 5 %: failed
    assert not choice.probing
    other = LayerChoice(LEVELS, 0.0)
    assert other.probe(1.0, 1_000_000, 0.0) == 2_000_000
    assert other.probe(1.1, 1_000_000, 0.0, congested=lambda since: since <= 1.0) == 0


def test_probes_stop_where_they_are_useless() -> None:
    top_need = LEVELS[-1].bps / allocate.UP_FRACTION
    fresh = LayerChoice(LEVELS, 0.0)
    assert fresh.probe(1.0, 5_000_000, 0.0) == pytest.approx(top_need * 1.05, abs=2)
    assert LayerChoice(LEVELS, 0.0).probe(1.0, 1_000_000, 0.05) == 0  # losing already
    top = LayerChoice(LEVELS, 0.0)
    top.update(0.0, 50_000_000)
    top.update(5.0, 50_000_000)
    assert top.top and top.probe(10.0, 50_000_000, 0.0) == 0


def test_an_empty_ladder_is_refused() -> None:
    with pytest.raises(ValueError):
        LayerChoice((), 0.0)


def test_going_down_counts_as_a_failed_probe() -> None:
    """The link just proved its limit: no probe for a while, then a gentle one."""
    choice = LayerChoice(LEVELS, 0.0)
    assert choice.update(0.1, 600_000).camera == "low"  # down
    assert choice.probe(1.0, 600_000, 0.0) == 0
    later = 0.1 + allocate.FAILED_PROBE_WAIT_S
    assert choice.probe(later, 600_000, 0.0) == int(600_000 * allocate.SLOW_PROBE)


def on_top_until(when: float) -> LayerChoice:
    """A pupil that climbed to the top level at 5 s and held it until ``when``."""
    choice = LayerChoice(LEVELS, 0.0)
    choice.update(4.5, 50_000_000)
    choice.update(5.0, 50_000_000)
    assert choice.top
    choice.update(when - 0.1, 50_000_000)
    return choice


def test_a_level_held_long_gets_one_recovery_probe_back_to_it_soon() -> None:
    """A moment's trouble (the pupil's own device busy) knocks down a pupil who held the top
    level for 15 s: one probe aimed back at it after RECOVERY_WAIT_S, not the 30 s wait."""
    choice = on_top_until(20.0)
    assert choice.update(20.0, 3_500_000).document != "high"  # down
    wait = allocate.RECOVERY_WAIT_S
    assert choice.probe(20.0 + wait - 0.1, 3_500_000, 0.0) == 0
    back = int(LEVELS[-1].bps / allocate.UP_FRACTION * 1.05)
    assert back > 3_500_000 * allocate.SLOW_PROBE  # aimed at the level left, not a fifth more
    assert choice.probe(20.0 + wait, 3_500_000, 0.0) == pytest.approx(back, abs=2)
    assert choice.probe(20.0 + wait + 1.0, back, 0.0) == 0 and not choice.probing  # carried
    choice.update(20.0 + wait + 1.0, back)
    assert choice.update(20.0 + wait + 1.5, back).document == "high" and choice.top


def test_a_failed_recovery_probe_and_a_second_drop_wait_as_usual() -> None:
    """The link did change: the recovery probe fails and the usual waits follow; a second drop
    within RECOVERY_EVERY_S gets no second recovery probe."""
    choice = on_top_until(20.0)
    choice.update(20.0, 3_000_000)
    start = 20.0 + allocate.RECOVERY_WAIT_S
    assert choice.probe(start, 3_000_000, 0.0) > 0
    assert choice.probe(start + 0.2, 3_000_000, 0.05) == 0  # lost 5 %: failed at once
    first = start + 0.2 + allocate.FIRST_FAILED_PROBE_WAIT_S  # a first failure's wait
    assert choice.probe(first - 0.1, 3_000_000, 0.0) == 0
    assert choice.probe(first, 3_000_000, 0.0) == int(3_000_000 * 1.2)  # a fifth more
    assert choice.probe(first + 0.2, 3_000_000, 0.05) == 0  # failed again
    wait = allocate.FAILED_PROBE_WAIT_S
    assert choice.probe(first + 0.2 + wait - 0.1, 3_000_000, 0.0) == 0
    assert choice.probe(first + 0.2 + wait, 3_000_000, 0.0) == int(3_000_000 * 1.2)
    again = on_top_until(20.0)
    again.update(20.0, 3_000_000)
    assert again.probe(20.0 + allocate.RECOVERY_WAIT_S, 3_000_000, 0.0) > 0
    assert again.probe(25.0, 6_100_000, 0.0) == 0 and not again.probing  # carried
    again.update(27.0, 50_000_000)
    again.update(27.5, 50_000_000)  # back on top at 27.5, held until 40
    assert again.top
    again.update(40.0, 3_000_000)  # down again 20 s after the first: no second recovery
    assert again.probe(40.0 + allocate.RECOVERY_WAIT_S, 3_000_000, 0.0) == 0
    assert again.probe(40.0 + wait, 3_000_000, 0.0) > 0


def test_a_recovery_probe_overshoots_a_link_that_did_change_at_most_twice() -> None:
    choice = on_top_until(20.0)
    choice.update(20.0, 1_000_000)  # down to what a 1 Mbit/s link carries
    start = 20.0 + allocate.RECOVERY_WAIT_S
    assert choice.probe(start, 1_000_000, 0.0) == 2_000_000
    assert choice.probe(start + 1.0, 1_900_000, 0.0) == 3_800_000  # it carried: doubling on
    top_need = int(LEVELS[-1].bps / allocate.UP_FRACTION * 1.05)
    assert choice.probe(start + 2.0, 3_700_000, 0.0) == pytest.approx(top_need, abs=2)


def test_a_pupil_a_probe_took_down_gets_no_recovery_probe() -> None:
    """The probe itself proved the link carries less (it changed): the usual wait."""
    choice = on_top_until(20.0)
    choice.update(20.0, 3_500_000)
    assert choice.probe(20.0 + allocate.RECOVERY_WAIT_S, 3_500_000, 0.0) > 0
    choice.update(25.0, 1_000_000)  # the recovery probe's overshoot: down further
    assert choice.probe(25.0 + allocate.RECOVERY_WAIT_S, 1_000_000, 0.0) == 0
    assert choice.probe(25.0 + allocate.FAILED_PROBE_WAIT_S, 1_000_000, 0.0) == 1_200_000


def test_a_level_held_briefly_gets_no_recovery_probe() -> None:
    choice = on_top_until(5.0 + allocate.RECOVERY_HELD_S - 1.0)
    choice.update(5.0 + allocate.RECOVERY_HELD_S - 1.0, 3_000_000)
    assert choice.probe(20.0, 3_000_000, 0.0) == 0


def test_a_recovery_probe_comes_after_the_last_step_down_of_the_trouble() -> None:
    """A pupil knocked down level by level over a few seconds: still one recovery probe, back
    to the level held before it all, RECOVERY_WAIT_S after the last step."""
    choice = on_top_until(20.0)
    choice.update(20.0, 3_500_000)
    choice.update(21.0, 1_000_000)
    choice.update(22.0, 600_000)  # each step down found the level just entered
    assert choice.probe(20.0 + allocate.RECOVERY_WAIT_S, 600_000, 0.0) == 0
    assert choice.probe(22.0 + allocate.RECOVERY_WAIT_S, 600_000, 0.0) == 1_200_000


def test_below_the_top_level_a_drop_waits_as_before() -> None:
    """Below the top level the estimate is what the link carries (a thin link): a pupil
    knocked down from the safe start it held for 15 s gets the usual wait, no recovery."""
    choice = LayerChoice(LEVELS, 0.0)
    assert not choice.top
    choice.update(15.0, 500_000)  # down, after holding the safe start for 15 s
    assert choice.probe(15.0 + allocate.RECOVERY_WAIT_S, 500_000, 0.0) == 0
    assert choice.probe(15.0 + allocate.FAILED_PROBE_WAIT_S, 500_000, 0.0) == 600_000


def test_no_recovery_is_kept_waiting_behind_a_full_uplink() -> None:
    """Knocked down from the top by the school's uplink share (more pupils joined): no room
    to probe into, and the recovery is dropped, not kept for a later step down."""
    choice = on_top_until(20.0)
    cap = LEVELS[-2].bps
    choice.update(20.0, 50_000_000, cap)
    assert not choice.top
    assert choice.probe(20.0 + allocate.RECOVERY_WAIT_S, 50_000_000, 0.0, cap) == 0
    choice.update(40.0, 1_000_000, cap)  # later, a real drop: the usual wait
    assert choice.probe(40.0 + allocate.RECOVERY_WAIT_S, 1_000_000, 0.0, cap) == 0
