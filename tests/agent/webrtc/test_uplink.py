"""The school's uplink budget (agent/webrtc/uplink.py): max-min fair shares, pure."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tests.fuzz  # noqa: F401  (the Hypothesis profile: bounded, seeded)
from agent.webrtc.uplink import SATURATED_MIN_PUPILS, saturated, share

TOP, MID, LOW = 2_000_000, 450_000, 150_000


def test_thirty_pupils_on_twenty_megabits_all_get_the_middle_layer() -> None:
    """The issue's case: nobody freezes, everyone gets the same 666 kbit/s."""
    shares = share(20_000_000, {f"pupil-{n}": TOP for n in range(30)})
    assert set(shares.values()) == {666_666}
    assert all(MID <= value < TOP for value in shares.values())
    assert sum(shares.values()) <= 20_000_000


def test_what_a_slow_pupil_cannot_use_goes_to_the_others() -> None:
    demands = {"4g": 300_000, "adsl": 800_000, "fibre-1": TOP, "fibre-2": TOP}
    shares = share(4_000_000, demands)
    assert shares == {"4g": 300_000, "adsl": 800_000, "fibre-1": 1_450_000, "fibre-2": 1_450_000}
    assert list(shares) == list(demands)  # the caller's order


def test_no_budget_or_enough_budget_gives_every_demand() -> None:
    demands = {"a": TOP, "b": LOW, "c": 0}
    assert share(0, demands) == demands
    assert share(10_000_000, demands) == demands
    assert share(TOP + LOW, demands) == demands  # exactly enough
    assert share(5_000, {}) == {}


def test_rounding_down_keeps_the_sum_under_the_budget() -> None:
    shares = share(10, {"a": 100, "b": 100, "c": 100})
    assert shares == {"a": 3, "b": 3, "c": 3}
    assert share(1, {"a": 5, "b": 5}) == {"a": 0, "b": 0}


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="budget"):
        share(-1, {"a": 1})
    assert share(1_000, {"a": -500, "b": 2_000}) == {"a": 0, "b": 1_000}


def test_a_large_class_is_cheap() -> None:
    demands = {n: (n * 7919) % 3_000_000 for n in range(100_000)}
    started = time.perf_counter()
    shares = share(50_000_000, demands)
    assert time.perf_counter() - started < 1.0  # ~0.1 s here: one sort
    assert sum(shares.values()) <= 50_000_000


demand_maps = st.dictionaries(st.integers(0, 200), st.integers(-10, 5_000_000), max_size=60)


@given(budget=st.integers(0, 100_000_000), demands=demand_maps)
def test_properties(budget: int, demands: dict[int, int]) -> None:
    shares = share(budget, demands)
    assert list(shares) == list(demands)
    wanted = {key: max(0, value) for key, value in demands.items()}
    assert all(0 <= shares[key] <= wanted[key] for key in demands)  # nobody above its demand
    if budget == 0:
        assert shares == wanted
        return
    total = sum(shares.values())
    assert total <= budget
    # Nothing wasted but the rounding: less than one bit/s per pupil.
    assert total >= min(budget, sum(wanted.values())) - len(demands)
    # Fairness: a pupil held below its demand gets at least what any other pupil gets.
    for key, value in shares.items():
        if value < wanted[key]:
            assert all(value >= other for other in shares.values())
    assert share(budget, demands) == shares  # deterministic


@given(budget=st.integers(1, 10_000_000), demands=demand_maps, extra=st.integers(1, 1_000_000))
def test_more_budget_never_lowers_a_share(budget: int, demands: dict[int, int], extra: int) -> None:
    before, after = share(budget, demands), share(budget + extra, demands)
    assert all(after[key] >= before[key] for key in demands)


def test_saturated_needs_every_active_pupil_losing_at_once() -> None:
    losing = [(900_000, 0.08)] * SATURATED_MIN_PUPILS
    assert saturated(losing)
    assert not saturated(losing[:-1])  # too few to prove anything shared
    assert not saturated([*losing, (900_000, 0.0)])  # one pupil fine: their own links
    assert saturated([*losing, (0, 0.0)])  # a paused pupil says nothing
    assert not saturated([])
    assert not saturated(losing, loss=0.10)
