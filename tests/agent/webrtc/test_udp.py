"""agent/webrtc/udp.py on real loopback sockets: the GSO batch path and the one-by-one path put
the same datagrams on the wire, in order; what it refuses it leaves to the caller untouched."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aioice.ice import Connection, StunProtocol

from agent.webrtc import udp

Addr = tuple[str, int]


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture
async def stun_protocol() -> AsyncIterator[StunProtocol]:
    """aioice's own protocol class on a real asyncio UDP transport, as an ICE pair has it."""
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: StunProtocol(Connection(ice_controlling=False)), local_addr=("127.0.0.1", 0)
    )
    yield protocol
    transport.close()


async def received(sock: socket.socket, count: int) -> list[bytes]:
    loop = asyncio.get_running_loop()
    out: list[bytes] = []
    async with asyncio.timeout(5):
        while len(out) < count:
            out.append(await loop.sock_recv(sock, 65536))
    return out


def frame(sizes: list[int], seed: int = 0) -> list[bytes]:
    """Datagrams of the given sizes, each with distinct content (its index in the frame)."""
    return [bytes([(seed + i) & 0xFF]) * size for i, size in enumerate(sizes)]


FRAMES = {
    "even split, short last": [1200] * 10 + [345],
    "single": [800],
    "over 64 segments": [1000] * 100,
    "over 60,000 bytes": [1400] * 50,
    "sizes vary": [1200, 1200, 900, 1300, 1300, 1300, 100, 1300, 50, 50],
    "larger after smaller": [300, 1200, 1200, 1200],
}


@pytest.mark.parametrize("sizes", FRAMES.values(), ids=FRAMES.keys())
async def test_the_batch_and_the_fallback_send_the_same_datagrams(
    stun_protocol: StunProtocol, receiver: socket.socket, sizes: list[int]
) -> None:
    addr: Addr = receiver.getsockname()
    datagrams = frame(sizes)
    assert udp.send_batch(stun_protocol, datagrams, addr) is True
    batched = await received(receiver, len(datagrams))
    for datagram in datagrams:
        await stun_protocol.send_data(datagram, addr)
    one_by_one = await received(receiver, len(datagrams))
    assert batched == one_by_one == datagrams


async def test_gso_cuts_system_calls(
    stun_protocol: StunProtocol, receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame of equal-size datagrams (and a short last one) leaves in one ``sendmsg``."""
    sock = stun_protocol.transport._sock  # type: ignore[attr-defined]
    calls = _SocketSpy(sock)
    monkeypatch.setattr(stun_protocol.transport, "_sock", calls)
    datagrams = frame([1200] * 20 + [400])
    assert udp.send_batch(stun_protocol, datagrams, receiver.getsockname())
    assert calls.calls == ["sendmsg"]
    assert await received(receiver, 21) == datagrams


def test_runs_follow_the_gso_rules() -> None:
    sizes = [[len(d) for d in run] for run in udp._runs(frame([1200] * 3 + [300, 1200, 1200]))]
    assert sizes == [[1200, 1200, 1200, 300], [1200, 1200]]  # a short segment ends a run
    assert [len(r) for r in udp._runs(frame([100] * 130))] == [64, 64, 2]
    assert [len(r) for r in udp._runs(frame([1400] * 50))] == [42, 8]  # ≤ 60,000 bytes a call
    assert [len(r) for r in udp._runs(frame([100, 200, 200]))] == [1, 2]  # larger: a new run
    assert udp._runs([]) == []


class _Plain(asyncio.DatagramProtocol):
    pass


async def test_what_it_does_not_batch_is_left_to_the_caller(
    stun_protocol: StunProtocol, receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    addr: Addr = receiver.getsockname()
    datagrams = frame([1000] * 4)
    loop = asyncio.get_running_loop()
    transport, plain = await loop.create_datagram_endpoint(_Plain, local_addr=("127.0.0.1", 0))
    try:
        assert udp.send_batch(plain, datagrams, addr) is False  # not aioice's (e.g. TURN)
    finally:
        transport.close()
    assert udp.send_batch(object(), datagrams, addr) is False  # no transport at all
    monkeypatch.setattr(stun_protocol.transport, "get_write_buffer_size", lambda: 1)
    assert udp.send_batch(stun_protocol, datagrams, addr) is False  # asyncio has a backlog
    monkeypatch.undo()
    monkeypatch.setattr(udp, "_gso_ok", False)
    assert udp.send_batch(stun_protocol, datagrams, addr) is False  # no GSO on this kernel
    with pytest.raises(BlockingIOError):
        receiver.recv(65536)  # nothing was sent by any of them


async def test_a_kernel_without_gso_turns_batching_off(
    stun_protocol: StunProtocol, receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _SocketSpy(stun_protocol.transport._sock, fail=OSError(errno.EIO, "no GSO"))  # type: ignore[attr-defined]
    monkeypatch.setattr(stun_protocol.transport, "_sock", spy)
    monkeypatch.setattr(udp, "_gso_ok", True)
    datagrams = frame([1000] * 4)
    assert udp.send_batch(stun_protocol, datagrams, receiver.getsockname()) is False
    assert udp._gso_ok is False  # not tried again: the caller sends one by one from now on
    with pytest.raises(BlockingIOError):
        receiver.recv(65536)


async def test_a_full_socket_hands_the_rest_to_asyncio_in_order(
    stun_protocol: StunProtocol, receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _SocketSpy(stun_protocol.transport._sock, fail=BlockingIOError(), fail_at=1)  # type: ignore[attr-defined]
    monkeypatch.setattr(stun_protocol.transport, "_sock", spy)
    datagrams = frame([1200] * 3 + [300] + [1200] * 3 + [300])  # two runs
    assert udp.send_batch(stun_protocol, datagrams, receiver.getsockname()) is True
    # the second run failed: asyncio's transport sent it (through the same socket)
    assert spy.calls == ["sendmsg", "sendmsg", "sendto", "sendto", "sendto", "sendto"]
    assert await received(receiver, len(datagrams)) == datagrams


class _SocketSpy:
    """A socket that counts send calls and fails the ``fail_at``-th one with ``fail``."""

    def __init__(self, sock: Any, fail: Exception | None = None, fail_at: int = 0) -> None:
        self._sock = sock
        self.calls: list[str] = []
        self._fail, self._fail_at = fail, fail_at

    def _call(self, name: str, *args: Any) -> Any:
        self.calls.append(name)
        if self._fail is not None and len(self.calls) - 1 == self._fail_at:
            raise self._fail
        return getattr(self._sock, name)(*args)

    def sendmsg(self, *args: Any) -> Any:
        return self._call("sendmsg", *args)

    def sendto(self, *args: Any) -> Any:
        return self._call("sendto", *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
