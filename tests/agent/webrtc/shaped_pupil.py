"""One aiortc pupil in its network namespace: ``python -m tests.agent.webrtc.shaped_pupil
--whep URL --address A --seconds S``.

Connects to the kit from ``A`` (its only host address), keeps the connection for ``S`` seconds
and prints the frames and kbit/s it got per track as JSON. aiortc's own receive path runs (not
bench's counting one, which skips it): its receivers send what a browser sends about the link,
receiver reports every ~1 s, NACKs, and REMB computed from the kit's ``abs-send-time``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from agent.webrtc.ice import restrict_host_addresses
from bench.whep_receiver import WhepReceiver


async def run(whep: str, seconds: float) -> dict[str, dict[str, float]]:
    receiver = WhepReceiver(whep)
    await receiver.connect(timeout=20.0)
    try:
        await asyncio.sleep(seconds)
    finally:
        result = {
            name: {"frames": stats.frames, "kbps": round(stats.bytes * 8 / 1000 / seconds, 1)}
            for name, stats in receiver.tracks.items()
        }
        await receiver.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--whep", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    restrict_host_addresses([args.address])
    json.dump(asyncio.run(run(args.whep, args.seconds)), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
