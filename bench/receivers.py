"""A process full of pupils: ``python -m bench.receivers --whep URL --count N``.

Connects N aiortc WHEP receivers (not decoding, see ``use_counting_decoder``), waits
``--warmup`` seconds, counts frames and bytes per track for ``--duration`` seconds and prints
one JSON document on stdout: per receiver and per track, frames per second and kbit/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from agent.webrtc.ice import restrict_host_addresses

from .whep_receiver import WhepReceiver, use_counting_decoder


async def run(whep_url: str, count: int, warmup: float, duration: float) -> dict[str, Any]:
    receivers = [WhepReceiver(whep_url) for _ in range(count)]
    started = time.monotonic()
    await asyncio.gather(*(r.connect() for r in receivers))
    connected = time.monotonic() - started
    await asyncio.sleep(warmup)
    before = [
        {k: (s.frames, s.bytes, s.incomplete) for k, s in r.tracks.items()} for r in receivers
    ]
    t0 = time.monotonic()
    await asyncio.sleep(duration)
    t1 = time.monotonic()
    after = [{k: (s.frames, s.bytes, s.incomplete) for k, s in r.tracks.items()} for r in receivers]
    per_viewer = []
    for b, a in zip(before, after, strict=True):
        per_viewer.append(
            {
                track: {
                    "fps": round((a[track][0] - b.get(track, (0, 0, 0))[0]) / (t1 - t0), 2),
                    "incomplete": a[track][2] - b.get(track, (0, 0, 0))[2],
                    "kbps": round(
                        (a[track][1] - b.get(track, (0, 0, 0))[1]) * 8 / 1000 / (t1 - t0), 1
                    ),
                }
                for track in a
            }
        )
    await asyncio.gather(*(r.close() for r in receivers))
    return {"count": count, "connect_s": round(connected, 2), "viewers": per_viewer}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--whep", required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    restrict_host_addresses(["127.0.0.1"])
    use_counting_decoder()
    result = asyncio.run(run(args.whep, args.count, args.warmup, args.duration))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
