"""Fan-out: the only place where an encoded stream meets its viewers.

One :class:`Fanout` per (source, codec) receives every packet of the shared encoder on the event
loop and appends it to each subscriber's :class:`ViewerQueue`. Queues are bounded: a viewer
whose sender falls behind never slows the others and never gets stale video: on overflow (or
when its oldest packet is too old) its queue is emptied and it waits for the next keyframe,
which it requests, so it never receives half a frame or a frame that refers to a dropped one.
Audio packets stand alone, so an audio queue just drops its oldest packet.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

from ..errors import AgentError
from .packets import EncodedPacket


class QueueClosed(AgentError):
    """The fan-out or the pupil went away; the reader of the queue stops."""


class ViewerQueue:
    """One viewer's bounded queue of one stream."""

    def __init__(
        self,
        maxlen: int,
        video: bool,
        request_keyframe: Callable[[], None],
        now: Callable[[], float],
        max_age: float = 1.0,
    ) -> None:
        self._packets: collections.deque[EncodedPacket] = collections.deque()
        self._maxlen = maxlen
        self._video = video
        self._request_keyframe = request_keyframe
        self._now = now
        self._max_age = max_age
        self._waiter: asyncio.Future[None] | None = None
        self.wakeup: Callable[[], None] | None = None
        """Called after each packet queued and at close (a reader waiting on several)."""
        self._closed = False
        # A video viewer starts by waiting for a keyframe: it cannot decode anything before one.
        self.waiting_for_keyframe = video
        self.delivered = 0
        self.dropped = 0
        self.resyncs = 0

    def push(self, item: EncodedPacket) -> None:
        """Called by the fan-out on the event loop; never blocks."""
        if self._closed:
            return
        if self.waiting_for_keyframe:
            if not item.keyframe:
                self.dropped += 1
                return
            self.waiting_for_keyframe = False
        elif len(self._packets) >= self._maxlen:
            if self._video:
                self._resync()
                if not item.keyframe:
                    self.dropped += 1
                    return
                self.waiting_for_keyframe = False
            else:
                self._packets.popleft()
                self.dropped += 1
        self._packets.append(item)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        if self.wakeup is not None:
            self.wakeup()

    def take(self) -> EncodedPacket | None:
        """The next fresh packet if one is queued, else None (never waits); raises
        :class:`QueueClosed` at the end."""
        while True:
            if self._closed:
                raise QueueClosed()
            if not self._packets:
                return None
            item = self._packets.popleft()
            if self._now() - item.capture_time > self._max_age:
                self._drop_stale(item)
                continue
            self.delivered += 1
            return item

    async def get(self) -> EncodedPacket:
        """The next packet for this viewer's sender; raises :class:`QueueClosed` at the end."""
        while True:
            item = self.take()
            if item is not None:
                return item
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def request_keyframe(self) -> None:
        """The viewer lost a picture (PLI/FIR): ask the encoder; it stays in sync meanwhile."""
        self._request_keyframe()

    def close(self) -> None:
        self._closed = True
        self._packets.clear()
        self._wake()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._packets)

    def _drop_stale(self, item: EncodedPacket) -> None:
        """``item`` is too old. Video skips to the next fresh queued keyframe, or resyncs."""
        self.dropped += 1
        if not self._video:
            return  # audio: just this packet is too old; the next ones may be fresh
        now = self._now()
        while self._packets:
            head = self._packets[0]
            if head.keyframe and now - head.capture_time <= self._max_age:
                self.resyncs += 1
                return  # decoding restarts cleanly at this keyframe
            self._packets.popleft()
            self.dropped += 1
        self._resync()

    def _resync(self) -> None:
        """Drop everything queued and wait for the next keyframe (which we ask for)."""
        self.dropped += len(self._packets)
        self._packets.clear()
        self.waiting_for_keyframe = True
        self.resyncs += 1
        self._request_keyframe()

    def stats(self) -> dict[str, Any]:
        return {
            "queued": len(self._packets),
            "delivered": self.delivered,
            "dropped": self.dropped,
            "resyncs": self.resyncs,
        }


class Fanout:
    """Distributes one encoded stream to every subscribed viewer queue."""

    def __init__(
        self,
        video: bool,
        request_keyframe: Callable[[], None],
        now: Callable[[], float],
        queue_len: int,
        max_age: float = 1.0,
        request_join: Callable[[], None] | None = None,
    ) -> None:
        self.video = video
        self._request_keyframe = request_keyframe
        self._request_join = request_join or request_keyframe
        self._now = now
        self._queue_len = queue_len
        self._max_age = max_age
        self._queues: set[ViewerQueue] = set()
        self.published = 0
        self.bytes_published = 0

    def subscribe(self, join: bool = False) -> ViewerQueue:
        """A new viewer's queue; for video it asks the encoder for a keyframe at once (with
        ``join``, as the viewer's first picture: sooner, see keyframes.py)."""
        queue = ViewerQueue(
            self._queue_len if self.video else max(self._queue_len, 25),
            self.video,
            self._request_keyframe,
            self._now,
            self._max_age,
        )
        self._queues.add(queue)
        if self.video:
            (self._request_join if join else self._request_keyframe)()
        return queue

    def unsubscribe(self, queue: ViewerQueue) -> None:
        self._queues.discard(queue)
        queue.close()

    def publish(self, item: EncodedPacket) -> None:
        self.published += 1
        self.bytes_published += item.size
        for queue in self._queues:
            queue.push(item)

    def close(self) -> None:
        for queue in self._queues:
            queue.close()
        self._queues.clear()

    @property
    def subscribers(self) -> int:
        return len(self._queues)
