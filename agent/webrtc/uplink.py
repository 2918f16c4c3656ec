"""The school's uplink: one budget for the whole class, shared fairly among its pupils.

Pure (no I/O, no clock). The allocation (:mod:`agent.webrtc.allocate`) asks each pupil's demand
(what its own link could take: its estimate, capped by its best layer) and calls :func:`share`
with ``[network] uplink_kbps`` (docs/adaptation.md, "The school's uplink"); it then picks for each
pupil the best layer that fits the pupil's share.

Why max-min fairness rather than first come, first served or proportional shares: a class is
only as good as its worst-served pupil. On a 20 Mbit/s uplink, 30 pupils each able to take the
2 Mbit/s top layer would, first come first served, give the first ten the top layer and freeze
the other twenty; proportional cuts give everyone 667 kbit/s, which max-min also gives, but
max-min hands what a pupil on a 300 kbit/s 4G link cannot use to the others instead of wasting
it. So the 30 pupils all get the middle layer (~450 kbit/s), nobody freezes, and a slow pupil
never takes bandwidth from the class that it could not have received anyway.

:func:`saturated` tells when the pupils' feedback points at the school's uplink rather than at
their own links: all of them losing packets at the same time.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)

SATURATED_LOSS = 0.05
"""Loss fraction from which a pupil counts as losing in :func:`saturated` (5 %: above the
~2 % a loss-based controller tolerates, below the 10 % at which it backs off hard)."""
SATURATED_MIN_PUPILS = 3
"""Fewer pupils losing at once prove nothing shared: two homes on bad 4G at once is common."""


def share(budget_bps: int, demands: Mapping[K, int]) -> dict[K, int]:
    """Max-min fair shares ("water-filling") of ``budget_bps`` among ``demands``.

    Each pupil gets ``min(its demand, the water level)``, where the level is the highest at
    which the shares still fit the budget: what a pupil with a small demand does not use is
    shared among the others. ``budget_bps == 0`` means no budget: everyone gets its demand.
    Negative demands count as 0. Shares are integers, never negative, never above the demand,
    and sum to at most the budget: the level is rounded down, so up to one bit/s per pupil is
    left unused and a pupil below its demand gets at least every other pupil's share. Same
    input, same output; O(n log n) (one sort).
    """
    if budget_bps < 0:
        raise ValueError(f"budget must be >= 0 bit/s, not {budget_bps}")
    wanted = {key: max(0, int(demand)) for key, demand in demands.items()}
    if budget_bps == 0 or sum(wanted.values()) <= budget_bps:
        return wanted
    # Ascending demands: each pupil that wants less than an equal split of what is left is
    # served in full; the first that wants more sets the level for itself and everyone after.
    order = sorted(wanted, key=lambda key: wanted[key])
    result: dict[K, int] = {}
    left = budget_bps
    for index, key in enumerate(order):
        remaining = len(order) - index
        if wanted[key] * remaining <= left:
            result[key] = wanted[key]
            left -= wanted[key]
            continue
        # The rest all want at least as much as ``key``, more than this level: each gets it.
        level = left // remaining
        for other in order[index:]:
            result[other] = level
        break
    return {key: result[key] for key in wanted}


def saturated(pupils: Sequence[tuple[int, float]], loss: float = SATURATED_LOSS) -> bool:
    """Whether a shared bottleneck (the school's uplink) is likely full, from each pupil's
    ``(sent_bps, loss fraction)``: every pupil that is being sent something loses at least
    ``loss`` at once, and there are at least :data:`SATURATED_MIN_PUPILS` of them. Pupils'
    own links fail independently; an uplink that overflows drops for everyone. The caller may
    then take the class's total sent rate as an estimate of the uplink (and cut below it)."""
    active = [fraction for sent, fraction in pupils if sent > 0]
    if len(active) < SATURATED_MIN_PUPILS:
        return False
    return all(fraction >= loss for fraction in active)
