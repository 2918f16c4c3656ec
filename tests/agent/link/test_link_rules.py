"""The kit's driver follows kitlink's rules against a real WebSocket server that breaks them:
no welcome in time (the injected clock jumps past WELCOME_TIMEOUT_S), something else first, a
final close code. The close codes the kit sends are the core's, not literals of its own."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from agent.config import ServerLinkConfig
from agent.link.apply import PushedConfigs
from agent.link.client import LinkClient
from agent.link.credential import Credential
from agent.link.health import HealthCollector
from agent.session import ClassSession
from kitlink import (
    CLOSE_MALFORMED,
    CLOSE_REVOKED,
    CLOSE_TIMEOUT,
    WELCOME_TIMEOUT_S,
    PushConfig,
    PushedConfig,
    encode,
)
from tests.conftest import agent_config, until

Behaviour = Callable[[ServerConnection], Awaitable[None]]


@contextlib.asynccontextmanager
async def kit_against(
    behaviour: Behaviour, tmp_path: Path, clock: Callable[[], float] | None = None
) -> AsyncIterator[tuple[LinkClient, list[tuple[int | None, str]]]]:
    """A kit dialling a server that does ``behaviour`` on each link; yields the kit and the
    close codes (and reasons) the kit sent."""
    closes: list[tuple[int | None, str]] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.recv()  # the hello
        await behaviour(ws)
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass
        rcvd = ws.protocol.close_rcvd
        if rcvd is not None:
            closes.append((rcvd.code, rcvd.reason))

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        config = agent_config(state_dir=str(tmp_path))
        session = ClassSession(config, "")
        credential = Credential(f"http://127.0.0.1:{port}", "kit-0011aabbccdd", "s" * 43)
        extra = {"clock": clock} if clock else {}
        client = LinkClient(
            credential,
            session,
            PushedConfigs(config, tmp_path),
            HealthCollector(session, tmp_path),
            ServerLinkConfig(reconnect_min_s=0.1, reconnect_max_s=1),
            **extra,
        )
        task = asyncio.create_task(client.run())
        try:
            yield client, closes
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            client.close()


async def say_nothing(ws: ServerConnection) -> None:
    pass


async def test_no_welcome_in_time_closes_with_the_timeout_code(tmp_path: Path) -> None:
    """Each call of the kit's clock moves it on by more than the welcome timeout: the kit closes
    at once with 4408, without waiting 20 real seconds, and redials."""
    ticks = itertools.count(step=WELCOME_TIMEOUT_S)
    async with kit_against(say_nothing, tmp_path, clock=lambda: float(next(ticks))) as (
        client,
        closes,
    ):
        await until(lambda: len(closes) >= 2, 5, "two links closed for silence")
        assert closes[0] == (CLOSE_TIMEOUT, "no welcome in time")
        assert client.connects == 0 and client.state != "refused"


async def test_anything_before_welcome_closes_with_the_malformed_code(tmp_path: Path) -> None:
    async def config_first(ws: ServerConnection) -> None:
        await ws.send(encode(PushConfig(version="0123456789abcdef", config=PushedConfig())))

    async with kit_against(config_first, tmp_path) as (client, closes):
        await until(lambda: closes, 5, "the kit closed the link")
        assert closes[0] == (CLOSE_MALFORMED, "the first message must be welcome")
        assert client.connects == 0


async def test_binary_frames_from_the_server_are_refused(tmp_path: Path) -> None:
    async def binary(ws: ServerConnection) -> None:
        await ws.send(b"{}")

    async with kit_against(binary, tmp_path) as (_, closes):
        await until(lambda: closes, 5, "the kit closed the link")
        assert closes[0] == (CLOSE_MALFORMED, "frames must be JSON text")


async def test_a_final_close_code_stops_the_dialling(tmp_path: Path) -> None:
    async def revoke(ws: ServerConnection) -> None:
        await ws.close(CLOSE_REVOKED, "this kit's credential has been revoked")

    async with kit_against(revoke, tmp_path) as (client, _):
        await until(lambda: client.state == "refused", 5, "the kit stopped")
        assert "4403" in client.refusal
