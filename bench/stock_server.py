"""The comparison: stock aiortc, one encoder per peer behind ``MediaRelay``, same sources.

``python -m bench.stock_server`` serves ``POST /whep`` with the same synthetic room camera,
document camera and tone as the agent, but each peer's sender encodes the raw frames itself
(aiortc's default path, H.264 preferred like the agent). Prints ``ready: URL``.
``--camera-only`` serves the room camera alone (see docs/benchmark.md for why).
"""

from __future__ import annotations

import asyncio
import fractions
import sys
import time
import uuid

import av
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from agent.clock import AUDIO_TIME_BASE, VIDEO_TIME_BASE
from agent.sources.synthetic import SyntheticCamera, SyntheticDocument, SyntheticMicrophone
from agent.webrtc.ice import restrict_host_addresses

from .processes import free_port


class CardTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, card: SyntheticCamera | SyntheticDocument) -> None:
        super().__init__()
        self.card = card
        self.n = 0
        self.start = time.monotonic()

    async def recv(self) -> av.VideoFrame:
        due = self.start + self.n / self.card.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        data = self.card.render(self.n, int(time.time() * 1000))
        frame = av.VideoFrame.from_ndarray(data, format="yuv420p")
        frame.pts = round(self.n * 90_000 / self.card.fps)
        frame.time_base = VIDEO_TIME_BASE
        self.n += 1
        return frame


class ToneTrack(MediaStreamTrack):
    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.mic = SyntheticMicrophone()
        self.sample = 0
        self.start = time.monotonic()

    async def recv(self) -> av.AudioFrame:
        due = self.start + self.sample / 48_000
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        block = self.mic.block(self.sample)
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48_000
        frame.pts = self.sample
        frame.time_base = fractions.Fraction(AUDIO_TIME_BASE)
        self.sample += len(block)
        return frame


async def serve(camera_only: bool) -> None:
    restrict_host_addresses(["127.0.0.1"])
    relay = MediaRelay()
    sources: list[MediaStreamTrack] = [CardTrack(SyntheticCamera())]
    if not camera_only:
        sources += [CardTrack(SyntheticDocument()), ToneTrack()]
    peers: dict[str, RTCPeerConnection] = {}
    h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]

    async def post(request: web.Request) -> web.Response:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        for track in sources:
            transceiver = pc.addTransceiver(relay.subscribe(track), direction="sendonly")
            if track.kind == "video":
                transceiver.setCodecPreferences(h264)
        await pc.setRemoteDescription(RTCSessionDescription(await request.text(), "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        peer_id = uuid.uuid4().hex
        peers[peer_id] = pc
        return web.Response(
            status=201,
            text=pc.localDescription.sdp,
            content_type="application/sdp",
            headers={"Location": f"/whep/resource/{peer_id}"},
        )

    async def delete(request: web.Request) -> web.Response:
        pc = peers.pop(request.match_info["peer"], None)
        if pc is not None:
            await pc.close()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/whep", post)
    app.router.add_delete("/whep/resource/{peer}", delete)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"ready: http://127.0.0.1:{port}/whep", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(camera_only="--camera-only" in sys.argv))
