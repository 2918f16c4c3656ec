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


async def run(
    whep_url: str, count: int, warmup: float, duration: float, windows: int = 1
) -> dict[str, Any]:
    """Connect ``count`` receivers, wait ``warmup`` s, then count ``windows`` consecutive
    windows of ``duration`` s: ``viewers`` is the first window, ``windows`` all of them."""
    receivers = [WhepReceiver(whep_url) for _ in range(count)]
    started = time.monotonic()
    await asyncio.gather(*(r.connect() for r in receivers))
    connected = time.monotonic() - started
    await asyncio.sleep(warmup)
    counted = []
    for _ in range(windows):
        before = [_counts(r) for r in receivers]
        t0 = time.monotonic()
        await asyncio.sleep(duration)
        t1 = time.monotonic()
        after = [_counts(r) for r in receivers]
        counted.append([_rates(b, a, t1 - t0) for b, a in zip(before, after, strict=True)])
    await asyncio.gather(*(r.close() for r in receivers))
    return {
        "count": count,
        "connect_s": round(connected, 2),
        "viewers": counted[0],
        "windows": counted,
    }


Counts = dict[str, tuple[int, int, int]]


def _counts(receiver: WhepReceiver) -> Counts:
    return {k: (s.frames, s.bytes, s.incomplete) for k, s in receiver.tracks.items()}


def _rates(before: Counts, after: Counts, seconds: float) -> dict[str, Any]:
    """Per track: frames per second, incomplete frames and kbit/s between two counts."""
    rates = {}
    for track, (frames, size, incomplete) in after.items():
        frames0, size0, incomplete0 = before.get(track, (0, 0, 0))
        rates[track] = {
            "fps": round((frames - frames0) / seconds, 2),
            "incomplete": incomplete - incomplete0,
            "kbps": round((size - size0) * 8 / 1000 / seconds, 1),
        }
    return rates


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--whep", required=True)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--windows", type=int, default=1)
    args = parser.parse_args()
    restrict_host_addresses(["127.0.0.1"])
    use_counting_decoder()
    result = asyncio.run(run(args.whep, args.count, args.warmup, args.duration, args.windows))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
