"""Keyframe requests are rate-limited per source, and a request is deferred, never lost."""

from __future__ import annotations

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
