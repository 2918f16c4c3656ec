"""agent/webrtc/pacer.py with the clock injected: what waits, how long, and the probe padding."""

from __future__ import annotations

import asyncio

from agent.webrtc.pacer import MIN_BURST, Pacer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_video_within_the_bucket_leaves_at_once_beyond_it_waits_its_time() -> None:
    clock = Clock()
    pacer = Pacer(800_000, clock, clock.sleep)  # 100 kB/s
    await pacer.acquire(MIN_BURST)
    assert clock.slept == []
    await pacer.acquire(10_000)  # 10 kB more than the bucket held: 0.1 s
    assert clock.slept == [0.1]


async def test_with_headroom_most_of_a_keyframe_leaves_at_once_in_the_same_runs() -> None:
    """A home pupil on the top level with room to spare (control decides): a 100 kB room
    camera keyframe at 6.5 Mbit/s leaves 65 kB at once and waits 43 ms for the rest, not
    123 ms; the runs stay 20 ms of the rate, so the room camera still cuts into a document
    keyframe's."""
    clock = Clock()
    pacer = Pacer(6_500_000, clock, clock.sleep)
    small = pacer.chunks([1200] * 40)
    pacer.set_rate(6_500_000, headroom=True)
    clock.now += 1.0  # the bucket fills up to its new size
    await pacer.acquire(100_000)
    assert len(clock.slept) == 1
    assert abs(clock.slept[0] - (100_000 - 65_000) / (6_500_000 / 8)) < 1e-9
    assert (
        pacer.chunks([1200] * 40)
        == small
        == [slice(0, 13), slice(13, 26), slice(26, 39), slice(39, 40)]
    )
    pacer.set_rate(6_500_000)  # no room any more: the small bucket at once
    assert pacer.burst == 6_500_000 / 8 * 0.02


async def test_sound_never_waits_and_the_video_behind_it_waits_for_its_bytes() -> None:
    clock = Clock()
    pacer = Pacer(800_000, clock, clock.sleep)
    pacer.debit(MIN_BURST)  # the bucket is emptied by sound
    pacer.debit(1_000)
    assert clock.slept == []
    await pacer.acquire(1_000)
    assert clock.slept == [0.02]  # its own 1 kB and the sound's 1 kB over the bucket


async def test_the_room_camera_goes_before_the_document_and_padding() -> None:
    """While a run waits for its bytes, the others queue: the room camera's goes first."""
    clock = Clock()
    pacer = Pacer(800_000, clock, clock.sleep)
    gate = asyncio.Event()
    order: list[str] = []

    async def held(seconds: float) -> None:
        await gate.wait()

    pacer._sleep = held  # type: ignore[assignment]
    busy = asyncio.create_task(pacer.acquire(50_000, 1))  # a document keyframe's run
    await asyncio.sleep(0)

    async def send(name: str, priority: int) -> None:
        await pacer.acquire(100, priority)
        order.append(name)

    waiting = [
        asyncio.create_task(send(name, priority))
        for name, priority in (("padding", 2), ("document", 1), ("camera", 0))
    ]
    await asyncio.sleep(0)
    gate.set()
    async with asyncio.timeout(1):
        await asyncio.gather(busy, *waiting)
    assert order == ["camera", "document", "padding"]


async def test_senders_of_the_same_priority_take_turns() -> None:
    clock = Clock()
    pacer = Pacer(800_000, clock, clock.sleep)
    order: list[str] = []

    async def send(name: str, runs: int) -> None:
        for _ in range(runs):
            await pacer.acquire(5_000)
            order.append(name)
            await asyncio.sleep(0)

    await asyncio.gather(send("a", 3), send("b", 3))
    assert order == ["a", "b"] * 3


async def test_a_cancelled_waiter_passes_its_turn_on() -> None:
    clock = Clock()
    pacer = Pacer(800_000, clock, clock.sleep)
    gate = asyncio.Event()

    async def slow_sleep(seconds: float) -> None:
        await gate.wait()

    pacer._sleep = slow_sleep  # type: ignore[assignment]
    first = asyncio.create_task(pacer.acquire(50_000))  # waits for its bytes
    await asyncio.sleep(0)
    second = asyncio.create_task(pacer.acquire(1_000))
    third = asyncio.create_task(pacer.acquire(1_000))
    await asyncio.sleep(0)
    second.cancel()
    gate.set()
    async with asyncio.timeout(1):
        await first
        await third
    assert second.cancelled()


def test_a_frame_is_cut_into_runs_of_at_most_a_bucket() -> None:
    pacer = Pacer(800_000, Clock())
    assert pacer.chunks([1200] * 10) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    assert pacer.chunks([1200]) == [slice(0, 1)]
    assert pacer.chunks([9000]) == [slice(0, 1)]  # one datagram larger than the bucket still goes
    fast = Pacer(20_000_000, Clock())  # 20 ms of 20 Mbit/s: 50 kB
    assert fast.chunks([1200] * 40) == [slice(0, 40)]


def test_padding_fills_what_the_media_leaves_of_the_probe_rate() -> None:
    clock = Clock()
    pacer = Pacer(1_000_000, clock, clock.sleep)
    assert pacer.padding_due(0.25) == 0  # not probing
    pacer.set_rate(1_000_000, probe_bps=2_000_000)
    clock.now += 0.25
    pacer.debit(25_000)  # the media sent 800 kbit/s over the quarter second
    assert pacer.padding_due(0.25) == 62_500 - 25_000
    clock.now += 10.0  # a long gap never makes one huge burst
    assert pacer.padding_due(0.25) == 62_500
    pacer.set_rate(1_000_000)
    clock.now += 0.25
    assert pacer.padding_due(0.25) == 0
    assert pacer.rate_bps == 1_000_000
