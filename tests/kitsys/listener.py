"""A notify socket as systemd binds it, for tests that run a real service process."""

from __future__ import annotations

import socket
import time


def messages(sock: socket.socket, seconds: float) -> list[bytes]:
    """Every datagram that arrives within ``seconds``."""
    out: list[bytes] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            out.append(sock.recv(4096))
        except TimeoutError:
            break
    return out


def first(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    return sock.recv(4096)


def wait_for(sock: socket.socket, payload: bytes, timeout: float) -> list[bytes]:
    """Datagrams up to and including ``payload`` (TimeoutError if it does not come)."""
    seen: list[bytes] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1] != payload:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        seen.append(sock.recv(4096))
    return seen
