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
