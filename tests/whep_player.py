"""A third-party WHEP player, as any would be written from the specs alone: it asks ``OPTIONS``
for the ICE servers (RFC 9725 ``Link: rel="ice-server"`` headers), makes its aiortc peer
connection with them, posts its offer and counts the room camera's pictures.

    python tests/whep_player.py WHEP_URL [--frames N] [--timeout S]

Prints one JSON line: ``{"frames": N, "ice_servers": [...urls], "pair": [local type, remote
type], "seconds": S}`` or ``{"error": "..."}`` (exit 1). Run inside a pupil's namespace of
tests/nat.py, it shows that nothing but the standard headers is needed to get through NAT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

LINK = re.compile(r'\s*<([^>]*)>((?:\s*;\s*[^;,=\s]+\s*(?:=\s*(?:"(?:[^"\\]|\\.)*"|[^;,\s]*))?)*)')
PARAM = re.compile(r'\s*;\s*([^;,=\s]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*))?')


def ice_servers(headers: list[str]) -> list[RTCIceServer]:
    """Every ``rel="ice-server"`` link of ``headers`` (RFC 8288: several per header, commas
    inside quoted strings allowed)."""
    servers = []
    for header in headers:
        position = 0
        while position < len(header):
            match = LINK.match(header, position)
            if match is None:
                break
            params: dict[str, str] = {}
            for name, value in PARAM.findall(match.group(2)):
                if value.startswith('"'):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                params[name.lower()] = value
            if "ice-server" in params.get("rel", "").split():
                servers.append(
                    RTCIceServer(
                        urls=match.group(1),
                        username=params.get("username"),
                        credential=params.get("credential"),
                    )
                )
            position = match.end()
            while position < len(header) and header[position] in ", ":
                position += 1
    return servers


async def play(url: str, frames_wanted: int) -> dict[str, Any]:
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        async with http.options(url) as response:
            servers = ice_servers(response.headers.getall("Link", []))
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        try:
            for kind in ("video", "video", "audio"):
                pc.addTransceiver(kind, direction="recvonly")
            got = asyncio.Event()
            counted = 0

            async def count(track: Any) -> None:
                nonlocal counted
                while True:
                    await track.recv()
                    counted += 1
                    if counted >= frames_wanted:
                        got.set()
                        return

            first_video: list[Any] = []

            @pc.on("track")
            def on_track(track: Any) -> None:
                if track.kind == "video" and not first_video:
                    first_video.append(asyncio.ensure_future(count(track)))

            await pc.setLocalDescription(await pc.createOffer())
            headers = {"Content-Type": "application/sdp"}
            async with http.post(url, data=pc.localDescription.sdp, headers=headers) as response:
                if response.status != 201:
                    return {"error": f"{response.status} {await response.text()}"}
                answer = await response.text()
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await got.wait()
            transport = pc.getTransceivers()[0].receiver.transport.transport
            nominated = transport._connection._nominated  # aioice inside: the pair in use
            chosen = next(iter(nominated.values())) if nominated else None
            return {
                "frames": counted,
                "seconds": round(time.monotonic() - started, 2),
                "ice_servers": [s.urls for s in servers],
                "pair": [chosen.local_candidate.type, chosen.remote_candidate.type]
                if chosen
                else None,
            }
        finally:
            await pc.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=20.0)
    options = parser.parse_args()

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(options.timeout):
            return await play(options.url, options.frames)

    try:
        result = asyncio.run(bounded())
    except (TimeoutError, OSError, aiohttp.ClientError) as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
