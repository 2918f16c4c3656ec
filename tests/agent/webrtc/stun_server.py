"""A STUN server for tests: ``python -m tests.agent.webrtc.stun_server ADDRESS PORT``.

Answers Binding requests with the address they came from (XOR-MAPPED-ADDRESS, RFC 5389), which
is all ICE needs of STUN to learn server-reflexive candidates. Run inside the test topology's
"public" namespace, so that no public STUN server is ever contacted. Prints ``ready`` once
listening; stops on SIGTERM or when its standard input closes (the test died).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from aioice import stun


class StunResponder(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            request = stun.parse_message(data)
        except ValueError:
            return
        if request.message_method != stun.Method.BINDING:
            return
        if request.message_class != stun.Class.REQUEST:
            return
        response = stun.Message(
            message_method=stun.Method.BINDING,
            message_class=stun.Class.RESPONSE,
            transaction_id=request.transaction_id,
        )
        response.attributes["XOR-MAPPED-ADDRESS"] = (addr[0], addr[1])
        response.add_fingerprint()
        self.transport.sendto(bytes(response), addr)


async def serve(address: str, port: int) -> None:
    """Bound to one address: bound to all, a host with several interfaces would answer from
    the address of the way back, which a NAT does not match with the request."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(StunResponder, local_addr=(address, port))
    print("ready", flush=True)
    try:
        await loop.run_in_executor(None, sys.stdin.read)  # returns at EOF: the test has gone
    finally:
        transport.close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], int(sys.argv[2])))
