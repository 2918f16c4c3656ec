"""Real aiortc pupils through WHEP against a live agent: media, keyframes, slow viewers, VP8."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiortc import RTCRtpReceiver

from agent.media.packets import EncodedPacket
from agent.webrtc.tracks import PacketTrack
from bench.whep_receiver import WhepReceiver
from tests.conftest import LiveAgent


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


def encoder(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(e for e in status["encoders"] if e["name"] == name)


async def test_three_tracks_decode_with_clock_code(agent: LiveAgent) -> None:
    whep = await agent.start()
    pupil = WhepReceiver(whep, read_clock=True)
    try:
        await pupil.connect()
        answer = pupil.pc.remoteDescription.sdp
        msids = [line.split()[1] for line in answer.splitlines() if line.startswith("a=msid:")]
        assert msids == ["camera", "document", "microphone"]
        await pupil.wait_frames("camera", 30)
        await pupil.wait_frames("document", 15)
        await pupil.wait_frames("microphone", 50)
        assert list(pupil.tracks) == ["camera", "document", "microphone"] or set(pupil.tracks) == {
            "camera",
            "document",
            "microphone",
        }
        for track in ("camera", "document"):
            delays = pupil.tracks[track].delays_ms
            assert len(delays) >= 10, track
            assert all(0 <= d < 1000 for d in delays), delays
        assert pupil.tracks["microphone"].energy > 0
        assert (await agent.status())["session"]["viewers"] == 1
    finally:
        await pupil.close()
    await until(lambda: not agent.session.viewers)


async def test_late_joiner_gets_a_keyframe_at_once(agent: LiveAgent) -> None:
    whep = await agent.start()
    first = WhepReceiver(whep)
    await first.connect()
    await first.wait_frames("camera", 10)
    await asyncio.sleep(0.6)  # past the keyframe rate limit, mid-GOP (interval is 2 s)
    forced = encoder(await agent.status(), "encode-camera-h264")["forced_keyframes"]
    second = WhepReceiver(whep)
    try:
        await second.connect()
        await second.wait_frames("camera", 1, timeout=2.0)
        first_frame_s = second.tracks["camera"].first_at - second.posted_at  # type: ignore[operator]
        assert first_frame_s < 1.0
        after = encoder(await agent.status(), "encode-camera-h264")["forced_keyframes"]
        assert after > forced
    finally:
        await asyncio.gather(first.close(), second.close())


async def test_pli_forces_a_rate_limited_keyframe(agent: LiveAgent) -> None:
    whep = await agent.start()
    pupil = WhepReceiver(whep)
    try:
        await pupil.connect()
        await pupil.wait_frames("camera", 10)
        await asyncio.sleep(0.6)
        before = encoder(await agent.status(), "encode-camera-h264")["forced_keyframes"]
        receiver: RTCRtpReceiver = pupil.pc.getTransceivers()[0].receiver
        ssrc = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
        media_ssrc = next(iter(ssrc)) if ssrc else None
        media_ssrc = media_ssrc or next(
            int(line.split()[0].split(":")[1])
            for line in pupil.pc.remoteDescription.sdp.splitlines()
            if line.startswith("a=ssrc:")
        )
        for _ in range(5):  # five PLIs at once: one keyframe now, at most one deferred
            await receiver._send_rtcp_pli(media_ssrc)
        await until(
            lambda: (
                agent.session.pipeline is not None
                and agent.session.pipeline.encoder_stats()[0]["forced_keyframes"] > before
            ),
            3,
        )
        await asyncio.sleep(0.8)
        after = encoder(await agent.status(), "encode-camera-h264")["forced_keyframes"]
        assert 1 <= after - before <= 2
    finally:
        await pupil.close()


async def test_stalled_viewer_does_not_slow_the_others(agent: LiveAgent) -> None:
    whep = await agent.start()
    pupils = [WhepReceiver(whep) for _ in range(3)]
    await asyncio.gather(*(p.connect() for p in pupils))
    try:
        await asyncio.gather(*(p.wait_frames("camera", 15) for p in pupils))
        stalled_viewer = next(iter(agent.session.viewers.values()))
        track = next(t for t in stalled_viewer.tracks if t.id == "camera")
        resumed: list[EncodedPacket] = []
        stall_over = asyncio.Event()
        original = track.next_packet

        async def stalled_next_packet(self: PacketTrack = track) -> EncodedPacket:
            if not stall_over.is_set():
                await asyncio.sleep(3.0)  # the sender is stuck (a slow link, a busy peer)
                stall_over.set()
                item = await original()
                resumed.append(item)
                return item
            return await original()

        track.next_packet = stalled_next_packet  # type: ignore[method-assign]
        await asyncio.sleep(0.1)
        others = [p for p in pupils if p.location and stalled_viewer.id not in p.location]
        counts = [p.tracks["camera"].frames for p in others]
        start = time.monotonic()
        await asyncio.sleep(2.5)
        elapsed = time.monotonic() - start
        for pupil, before in zip(others, counts, strict=True):
            assert (pupil.tracks["camera"].frames - before) / elapsed >= 26
        await asyncio.wait_for(stall_over.wait(), 5)
        await until(lambda: bool(resumed), 3)
        assert resumed[0].keyframe  # after a stall: a keyframe first, never half a frame
        stats = stalled_viewer.stats()["tracks"]["camera"]
        assert stats["resyncs"] >= 1 and stats["dropped"] > 0
    finally:
        await asyncio.gather(*(p.close() for p in pupils))


async def test_delete_and_stop_end_viewers(agent: LiveAgent) -> None:
    whep = await agent.start()
    a, b = WhepReceiver(whep), WhepReceiver(whep)
    await asyncio.gather(a.connect(), b.connect())
    await asyncio.gather(a.wait_frames("camera", 5), b.wait_frames("camera", 5))
    assert a.location is not None
    async with agent.http.delete(a.location) as response:
        assert response.status == 200
    await until(lambda: len(agent.session.viewers) == 1)
    await agent.stop()
    await until(lambda: b.pc.connectionState in ("closed", "failed") or not agent.session.viewers)
    assert not agent.session.viewers
    status, _ = await _post_offer(agent, whep)
    assert status == 404
    await asyncio.gather(a.close(delete=False), b.close(delete=False))
    for source in (await agent.status())["sources"]:
        assert source.get("capturing") is False  # devices released


async def _post_offer(agent: LiveAgent, whep: str) -> tuple[int, str]:
    async with agent.http.post(
        whep, data=b"v=0\r\n", headers={"Content-Type": "application/sdp"}
    ) as response:
        return response.status, await response.text()


async def test_vp8_only_browser_gets_vp8(agent: LiveAgent) -> None:
    whep = await agent.start()
    pupil = WhepReceiver(whep)
    vp8 = [c for c in RTCRtpReceiver.getCapabilities("video").codecs if c.mimeType == "video/VP8"]
    original_add = pupil.pc.addTransceiver

    def add(kind: str, direction: str) -> Any:
        transceiver = original_add(kind, direction=direction)
        if kind == "video":
            transceiver.setCodecPreferences(vp8)
        return transceiver

    pupil.pc.addTransceiver = add  # type: ignore[method-assign]
    try:
        await pupil.connect()
        await pupil.wait_frames("camera", 15)
        await pupil.wait_frames("document", 5)
        names = {e["name"] for e in (await agent.status())["encoders"]}
        assert {"encode-camera-vp8", "encode-document-vp8"} <= names
    finally:
        await pupil.close()
    await until(
        lambda: "vp8" not in str(agent.session.pipeline and agent.session.pipeline.encoder_stats()),
        5,
    )
