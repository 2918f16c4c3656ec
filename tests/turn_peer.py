"""A TURN client (aioice's) run as a process inside a namespace of tests/nat.py.

    python tests/turn_peer.py --server HOST:PORT --transport udp|tcp|tls \
        --username U --password P [--cafile CERT] [--timeout S]

It allocates a relay and prints one JSON line: ``{"relayed": [host, port], "mapped": [...]}``,
or ``{"error": "...", "code": 401}`` and exits 1. Then each JSON line on stdin
``{"send": [host, port], "data": "text"}`` is sent through the relay (errors come back as
``{"send_error": "...", "code": 403}``) and each datagram received is printed as
``{"received": "text", "from": [host, port]}``. It exits when stdin closes or after ``--timeout``
seconds, deleting its allocation.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
from typing import Any

from aioice import stun, turn


def say(**message: Any) -> None:
    print(json.dumps(message), flush=True)


def error_fields(error: BaseException) -> dict[str, Any]:
    code = error.response.error_code if isinstance(error, stun.TransactionFailed) else None
    return {"code": code, "error": str(error) or type(error).__name__}


class Receiver(asyncio.DatagramProtocol):
    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        say(received=data.decode("utf-8", "replace"), **{"from": list(addr)})

    def error_received(self, exc: Exception) -> None:
        fields = error_fields(exc)
        say(send_error=fields["error"], code=fields["code"])


async def main(options: argparse.Namespace) -> int:
    host, _, port = options.server.rpartition(":")
    context: ssl.SSLContext | None = None
    if options.transport == "tls":
        context = ssl.create_default_context(cafile=options.cafile)
    try:
        async with asyncio.timeout(options.timeout):
            transport, _ = await turn.create_turn_endpoint(
                Receiver,
                server_addr=(host, int(port)),
                username=options.username,
                password=options.password,
                ssl=context,
                transport="udp" if options.transport == "udp" else "tcp",
            )
    except (OSError, stun.TransactionError, TimeoutError, ConnectionError, ssl.SSLError) as error:
        say(**error_fields(error))
        return 1
    say(
        relayed=list(transport.get_extra_info("sockname")),
        mapped=list(transport.get_extra_info("related_address")),
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        async with asyncio.timeout(options.timeout):
            while line := await reader.readline():
                command = json.loads(line)
                peer = (command["send"][0], int(command["send"][1]))
                transport.sendto(command["data"].encode(), peer)
    except TimeoutError:
        pass
    finally:
        transport.close()
        await asyncio.sleep(0.2)  # the Refresh(lifetime=0) that deletes the allocation
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--transport", choices=("udp", "tcp", "tls"), default="udp")
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--cafile")
    parser.add_argument("--timeout", type=float, default=30.0)
    sys.exit(asyncio.run(main(parser.parse_args())))
