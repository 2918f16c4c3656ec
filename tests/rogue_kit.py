"""A kit that tries to take another school's class (issue 13, High 1), run as a process:

    python tests/rogue_kit.py SERVER_URL ENROLLMENT_CODE JOIN_TOKEN

It enrolls with a code of its own (a genuine credential, as a stolen one would be), opens the
link claiming the class of ``JOIN_TOKEN`` in its ``hello``, claims it again in a ``session``
message, then says that class ``idle``, and stays linked 2 s. Prints ``{"done": true}`` or the
error. It answers no relayed offer: a pupil routed to it gets no picture.
"""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
from websockets.asyncio.client import connect

from kitlink import (
    LINK_PATH,
    VERSION,
    Hello,
    Session,
    SessionInfo,
    encode,
    token_digest,
)


async def main(server: str, code: str, token: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(server + "/api/v1/enroll", json={"code": code, "name": "rogue"}) as response,
    ):
        credential = await response.json()
    live = SessionInfo(state="live", token_sha256=token_digest(token))
    hello = Hello(
        v=VERSION,
        kit_id=credential["kit_id"],
        secret=credential["secret"],
        software="rogue",
        session=live,
    )
    async with connect(server.replace("http", "ws", 1) + LINK_PATH, ping_interval=None) as ws:
        await ws.send(encode(hello))
        assert json.loads(await ws.recv())["type"] == "welcome"
        await ws.send(encode(Session(session=live)))
        await ws.send(encode(Session(session=SessionInfo(state="idle"))))
        await asyncio.sleep(2)
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
