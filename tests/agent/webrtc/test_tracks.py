"""agent/webrtc/tracks.py: a pupil's video track follows its layer, switching only on a keyframe
of the new layer, with real fan-outs and packets."""

from __future__ import annotations

import asyncio
import time

import av
import pytest

from agent.media.fanout import Fanout, ViewerQueue
from agent.media.packets import EncodedPacket
from agent.webrtc import tracks
from agent.webrtc.tracks import KEYFRAMES, PAUSED, PacketTrack


def packet(keyframe: bool, tag: int) -> EncodedPacket:
    return EncodedPacket(av.Packet(bytes([tag])), keyframe, time.monotonic(), 1, (bytes([tag]),))


class Layers:
    def __init__(self) -> None:
        self.asked: list[str] = []
        self.fanouts = {
            name: Fanout(True, lambda name=name: self.asked.append(name), time.monotonic, 50)
            for name in ("high", "mid", "low")
        }
        self.left: list[str] = []
        self.joins: list[str] = []
        """Subscriptions made while the track had sent no picture yet."""

    def subscribe(self, layer: str, join: bool = False) -> ViewerQueue:
        if join:
            self.joins.append(layer)
        return self.fanouts[layer].subscribe(join)

    def unsubscribe(self, queue: ViewerQueue, layer: str) -> None:
        self.left.append(layer)
        self.fanouts[layer].unsubscribe(queue)

    def publish(self, layer: str, keyframe: bool, tag: int) -> None:
        self.fanouts[layer].publish(packet(keyframe, tag))


async def next_tag(track: PacketTrack) -> int:
    async with asyncio.timeout(1):
        item = await track.next_packet()
    return item.payloads[0][0]


@pytest.fixture
async def started() -> tuple[PacketTrack, Layers]:
    layers = Layers()
    track = PacketTrack("video", "camera")
    track.bind("h264", layers.subscribe, layers.unsubscribe, "mid")
    first = asyncio.create_task(track.next_packet())
    await asyncio.sleep(0)
    layers.publish("mid", True, 1)
    assert (await first).payloads[0][0] == 1
    return track, layers


async def test_it_starts_on_its_layer(started: tuple[PacketTrack, Layers]) -> None:
    track, layers = started
    assert track.layer == "mid" and layers.asked == ["mid"]


async def test_switches_only_at_the_new_layers_keyframe(
    started: tuple[PacketTrack, Layers],
) -> None:
    track, layers = started
    track.want("high")
    assert layers.asked == ["mid", "high"]  # the new layer's encoder is asked for a keyframe
    layers.publish("high", False, 50)  # not a keyframe: no use to the pupil
    layers.publish("mid", False, 2)
    assert await next_tag(track) == 2  # still on the old layer
    layers.publish("high", True, 51)
    layers.publish("mid", False, 3)
    layers.publish("high", False, 52)
    assert [await next_tag(track), await next_tag(track)] == [51, 52]
    assert track.layer == "high" and layers.left == ["mid"]
    assert track.stats()["layer"] == "high" and track.stats()["layer_switches"] == 1


async def test_a_newer_wish_replaces_a_pending_one(started: tuple[PacketTrack, Layers]) -> None:
    track, layers = started
    track.want("high")
    track.want("low")
    assert layers.left == ["high"] and layers.fanouts["high"].subscribers == 0
    track.want("mid")  # back to where it is: nothing pending any more
    assert layers.left == ["high", "low"] and track.layer == "mid"


async def test_paused_sends_nothing_until_a_layer_is_wanted(
    started: tuple[PacketTrack, Layers],
) -> None:
    track, layers = started
    track.want(PAUSED)
    assert track.layer == PAUSED and layers.left == ["mid"]
    waiting = asyncio.create_task(track.next_packet())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    track.want("low")
    layers.publish("low", True, 7)
    async with asyncio.timeout(1):
        assert (await waiting).payloads[0][0] == 7


async def test_keyframes_only_skips_the_frames_between(
    started: tuple[PacketTrack, Layers],
) -> None:
    track, layers = started
    track.want("low")
    layers.publish("low", True, 10)
    assert await next_tag(track) == 10
    track.want(KEYFRAMES)  # the same layer's queue: no new subscription
    assert layers.fanouts["low"].subscribers == 1
    for tag, keyframe in ((11, False), (12, False), (13, True), (14, False)):
        layers.publish("low", keyframe, tag)
    assert await next_tag(track) == 13


async def test_stop_leaves_every_layer(started: tuple[PacketTrack, Layers]) -> None:
    track, layers = started
    track.want("high")
    track.stop()
    assert sorted(layers.left) == ["high", "mid"]
    assert all(f.subscribers == 0 for f in layers.fanouts.values())


async def test_a_video_track_subscribes_as_a_join_when_bound_before_its_sender_starts() -> None:
    """The join's keyframe is asked for when the answer is made and queued while the pupil
    connects: the sender's first packet is that keyframe, without another request."""
    layers = Layers()
    track = PacketTrack("video", "camera")
    track.bind("h264", layers.subscribe, layers.unsubscribe, "mid")
    assert layers.joins == ["mid"] and layers.asked == ["mid"]
    layers.publish("mid", True, 1)  # made while ICE and DTLS connect
    layers.publish("mid", False, 2)
    assert [await next_tag(track), await next_tag(track)] == [1, 2]
    assert layers.asked == ["mid"] and layers.fanouts["mid"].subscribers == 1
    track.count_sent(packet(True, 1))
    track.want("high")  # the pupil has a picture now: a layer switch, not a join
    assert layers.joins == ["mid"] and layers.asked == ["mid", "high"]
    track.stop()


async def test_an_early_subscription_without_a_sender_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pupil that never connects holds no queue (nor asks for keyframes on overflow) past
    ``EARLY_S``; if it connects later, its sender subscribes again, as a join."""
    monkeypatch.setattr(tracks, "EARLY_S", 0.05)
    layers = Layers()
    track = PacketTrack("video", "camera")
    track.bind("h264", layers.subscribe, layers.unsubscribe, "mid")
    assert layers.fanouts["mid"].subscribers == 1
    await asyncio.sleep(0.1)
    assert layers.fanouts["mid"].subscribers == 0 and layers.left == ["mid"]
    first = asyncio.create_task(track.next_packet())
    await asyncio.sleep(0)
    assert layers.joins == ["mid", "mid"]
    layers.publish("mid", True, 3)
    async with asyncio.timeout(1):
        assert (await first).payloads[0][0] == 3
    track.stop()


async def test_audio_and_paused_tracks_wait_for_their_sender() -> None:
    layers = Layers()
    paused = PacketTrack("video", "document")
    paused.bind("h264", layers.subscribe, layers.unsubscribe, PAUSED)
    audio = PacketTrack("audio", "microphone")
    audio.bind("opus", layers.subscribe, layers.unsubscribe)
    assert not layers.joins and all(f.subscribers == 0 for f in layers.fanouts.values())
    paused.stop()
    audio.stop()
