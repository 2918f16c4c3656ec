"""Keyframe requests are rate-limited per source, and a request is deferred, never lost."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from agent.media.keyframes import KeyframeLimiter


class FakeTimers:
    def __init__(self) -> None:
        self.now = 0.0
        self.pending: list[tuple[float, Callable[[], None]]] = []

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeHandle:
        entry = (self.now + delay, callback)
        self.pending.append(entry)
        return FakeHandle(self, entry)

    def advance(self, seconds: float) -> None:
        """Run every timer due before ``now + seconds`` at its own due time, like a loop."""
        end = self.now + seconds
        while True:
            due = sorted((e for e in self.pending if e[0] <= end), key=lambda e: e[0])
            if not due:
                break
            self.pending.remove(due[0])
            self.now = due[0][0]
            due[0][1]()
        self.now = end


class FakeHandle:
    def __init__(self, timers: FakeTimers, entry: tuple[float, Callable[[], None]]) -> None:
        self._timers, self._entry = timers, entry

    def cancel(self) -> None:
        if self._entry in self._timers.pending:
            self._timers.pending.remove(self._entry)


def make() -> tuple[KeyframeLimiter, FakeTimers, list[float]]:
    timers = FakeTimers()
    fired: list[float] = []
    limiter = KeyframeLimiter(
        lambda: fired.append(timers.now),
        0.5,
        lambda: timers.now,
        timers.call_later,  # type: ignore[arg-type]
    )
    return limiter, timers, fired


def test_first_request_fires_at_once() -> None:
    limiter, _, fired = make()
    limiter.request()
    assert fired == [0.0]


def test_requests_inside_interval_are_merged_and_deferred() -> None:
    limiter, timers, fired = make()
    limiter.request()
    timers.advance(0.1)
    for _ in range(30):  # thirty pupils joining at once: one more keyframe, not thirty
        limiter.request()
    assert fired == [0.0]
    timers.advance(0.39)
    assert fired == [0.0]
    timers.advance(0.02)
    assert fired == [0.0, 0.5]
    assert limiter.requested == 31 and limiter.forced == 2


def test_request_after_interval_fires_immediately() -> None:
    limiter, timers, fired = make()
    limiter.request()
    timers.advance(0.7)
    limiter.request()
    assert fired == [0.0, 0.7]


def test_cancel_drops_deferred_request() -> None:
    limiter, timers, fired = make()
    limiter.request()
    limiter.request()
    limiter.cancel()
    timers.advance(1.0)
    assert fired == [0.0]


def make_joins(join_interval: float = 0.2) -> tuple[KeyframeLimiter, FakeTimers, list[float]]:
    timers = FakeTimers()
    fired: list[float] = []
    limiter = KeyframeLimiter(
        lambda: fired.append(round(timers.now, 3)),
        0.5,
        lambda: timers.now,
        timers.call_later,  # type: ignore[arg-type]
        join_interval=join_interval,
    )
    return limiter, timers, fired


def test_a_join_waits_at_most_the_join_interval_after_the_last_keyframe() -> None:
    limiter, timers, fired = make_joins()
    limiter.join()
    timers.advance(0.05)
    limiter.join()  # 50 ms after a keyframe: the next one 200 ms after it, not 500
    timers.advance(0.2)
    assert fired == [0.0, 0.2]


def test_a_repair_still_waits_the_min_interval() -> None:
    limiter, timers, fired = make_joins()
    limiter.join()
    timers.advance(0.05)
    limiter.request()  # a PLI: the pupil has a picture, it can wait
    timers.advance(0.3)
    assert fired == [0.0]
    timers.advance(0.2)
    assert fired == [0.0, 0.5]


def test_a_join_brings_a_deferred_repair_forward_and_both_ride_on_one_keyframe() -> None:
    limiter, timers, fired = make_joins()
    limiter.request()
    timers.advance(0.1)
    limiter.request()  # deferred to 0.5
    limiter.join()  # due at 0.2: the repair is served then too
    timers.advance(1.0)
    assert fired == [0.0, 0.2]
    assert limiter.forced == 2 and limiter.requested == 3 and limiter.joins == 1


def test_joins_and_repairs_ride_on_a_keyframe_already_due() -> None:
    limiter, timers, fired = make_joins()
    limiter.join()
    timers.advance(0.1)
    limiter.join()  # due at 0.2
    timers.advance(0.05)
    limiter.request()  # a PLI would wait until 0.5: it rides on the join's keyframe
    timers.advance(0.03)
    limiter.join()  # due by 0.2 anyway
    timers.advance(1.0)
    assert fired == [0.0, 0.2]
    assert limiter.requested == 4 and limiter.forced == 2


def test_a_burst_of_joins_gets_one_keyframe_per_window_not_one_per_pupil() -> None:
    """Thirty pupils joining within 5 s: each waits at most the join interval for its
    keyframe, and the layer gets at most one forced keyframe per join interval."""
    limiter, timers, fired = make_joins()
    rng = random.Random(18)
    joins = sorted(rng.uniform(0.0, 5.0) for _ in range(30))
    for at in joins:
        timers.advance(at - timers.now)
        limiter.join()
    timers.advance(1.0)
    waits = [min(f for f in fired if f >= round(at, 3) - 1e-9) - at for at in joins]
    assert max(waits) <= 0.2 + 1e-3
    assert all(b - a >= 0.2 - 1e-3 for a, b in itertools.pairwise(fired))
    assert len(fired) < 30 and limiter.forced == len(fired) and limiter.joins == 30


def test_joins_without_a_join_interval_wait_like_repairs() -> None:
    limiter, timers, fired = make()
    limiter.join()
    timers.advance(0.1)
    limiter.join()
    timers.advance(0.3)
    assert fired == [0.0]
    timers.advance(0.2)
    assert fired == [0.0, 0.5]


def test_a_join_interval_above_the_min_interval_is_capped_by_it() -> None:
    limiter, timers, fired = make_joins(join_interval=2.0)
    limiter.join()
    timers.advance(0.1)
    limiter.join()
    timers.advance(1.0)
    assert fired == [0.0, 0.5]


def test_cancel_drops_a_deferred_join() -> None:
    limiter, timers, fired = make_joins()
    limiter.join()
    limiter.join()
    limiter.cancel()
    timers.advance(1.0)
    assert fired == [0.0]
