"""Fan-out queues: bounded, drop to the next keyframe, never stale, never half a frame."""

from __future__ import annotations

import asyncio

import av
import pytest

from agent.media.fanout import Fanout, QueueClosed, ViewerQueue
from agent.media.packets import EncodedPacket


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def pkt(n: int, key: bool = False, t: float = 100.0) -> EncodedPacket:
    packet = av.Packet(bytes([n % 256]) * 10)
    return EncodedPacket(packet, key, t, 10)


def queue(maxlen: int = 4, video: bool = True) -> tuple[ViewerQueue, list[int], Clock]:
    requests: list[int] = []
    clock = Clock()
    q = ViewerQueue(maxlen, video, lambda: requests.append(1), clock, max_age=1.0)
    return q, requests, clock


async def drain(q: ViewerQueue) -> list[int]:
    out = []
    while len(q):
        try:
            item = await asyncio.wait_for(q.get(), timeout=0.2)
        except TimeoutError:
            break  # everything left was dropped; the reader waits for a keyframe
        out.append(bytes(item.packet)[0])
    return out


async def test_video_viewer_starts_at_a_keyframe() -> None:
    q, _, _ = queue()
    q.push(pkt(1))
    q.push(pkt(2))
    q.push(pkt(3, key=True))
    q.push(pkt(4))
    assert await drain(q) == [3, 4]
    assert q.dropped == 2


async def test_overflow_drops_to_next_keyframe_and_requests_one() -> None:
    q, requests, _ = queue(maxlen=3)
    q.push(pkt(1, key=True))
    for n in (2, 3):
        q.push(pkt(n))
    q.push(pkt(4))  # overflow: everything queued goes, wait for a keyframe
    q.push(pkt(5))
    assert requests == [1]
    assert len(q) == 0
    q.push(pkt(6, key=True))
    q.push(pkt(7))
    assert await drain(q) == [6, 7]
    assert q.resyncs == 1


async def test_overflow_on_a_keyframe_keeps_it() -> None:
    q, _, _ = queue(maxlen=2)
    q.push(pkt(1, key=True))
    q.push(pkt(2))
    q.push(pkt(3, key=True))
    assert await drain(q) == [3]


async def test_stale_video_is_dropped_to_next_keyframe() -> None:
    q, requests, clock = queue(maxlen=10)
    q.push(pkt(1, key=True, t=100.0))
    q.push(pkt(2, t=100.03))
    clock.t = 101.5  # the sender was stuck for 1.5 s
    q.push(pkt(3, t=101.5))
    q.push(pkt(4, key=True, t=101.5))
    q.push(pkt(5, t=101.53))
    assert await drain(q) == [4, 5]
    assert requests == []  # a fresh keyframe was already queued: no need to ask for one


async def test_stale_video_without_fresh_keyframe_waits_for_one() -> None:
    q, requests, clock = queue(maxlen=10)
    q.push(pkt(1, key=True, t=100.0))
    q.push(pkt(2, t=100.03))
    clock.t = 101.5
    q.push(pkt(3, t=101.5))
    assert await drain(q) == []
    assert requests == [1] and q.waiting_for_keyframe
    q.push(pkt(4, t=101.53))  # not a keyframe: still waiting
    q.push(pkt(5, key=True, t=101.56))
    assert await drain(q) == [5]


async def test_audio_overflow_drops_oldest_only() -> None:
    q, requests, _ = queue(maxlen=3, video=False)
    for n in range(1, 6):
        q.push(pkt(n, key=True))
    assert await drain(q) == [3, 4, 5]
    assert requests == []


async def test_get_waits_and_close_ends_reader() -> None:
    q, _, _ = queue()
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.push(pkt(9, key=True))
    assert bytes((await getter).packet)[0] == 9
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.close()
    with pytest.raises(QueueClosed):
        await getter


async def test_fanout_gives_the_same_packet_object_to_every_viewer() -> None:
    requests: list[int] = []
    fanout = Fanout(True, lambda: requests.append(1), Clock(), queue_len=8)
    viewers = [fanout.subscribe() for _ in range(3)]
    assert requests == [1, 1, 1]  # each join asks for a keyframe (the limiter merges them)
    item = pkt(1, key=True)
    fanout.publish(item)
    got = [await v.get() for v in viewers]
    assert all(g is item for g in got)
    fanout.unsubscribe(viewers[0])
    assert fanout.subscribers == 2


async def test_a_stalled_viewer_does_not_affect_others() -> None:
    fanout = Fanout(True, lambda: None, Clock(), queue_len=5)
    stalled, healthy = fanout.subscribe(), fanout.subscribe()
    received = []
    for n in range(40):
        fanout.publish(pkt(n, key=(n % 10 == 0)))
        received.append(bytes((await healthy.get()).packet)[0])
    assert received == list(range(40))
    assert len(stalled) <= 5
    assert stalled.resyncs >= 1
