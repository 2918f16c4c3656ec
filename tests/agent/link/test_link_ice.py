"""The kit's link and the network (issue 12), against a small stand-in server: it says it knows
``ice_servers``, uses the server's TURN servers until they expire (never on disk), reports its
reach and pupils' paths, and goes through an explicit HTTP proxy (``server.proxy``) when told,
for the link and for enrollment."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from agent.config import ServerLinkConfig, config_from_dict
from agent.errors import ConfigError
from agent.link.apply import PushedConfigs
from agent.link.client import LinkClient
from agent.link.credential import Credential, enroll
from agent.link.health import HealthCollector
from agent.session import ClassSession
from kitlink import ENROLL_PATH, LINK_PATH, IceServers, PushedIceServer, Welcome
from tests.conftest import agent_config, until

SECRET_CREDENTIAL = "S3CR3T-turn-credential"


class FakeServer:
    """Accepts one kit: welcome, then whatever the test queues; records every frame."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.to_send: asyncio.Queue[str] = asyncio.Queue()
        self.paths: list[str] = []

    async def handler(self, ws: ServerConnection) -> None:
        self.paths.append(ws.request.path if ws.request else "")
        hello = json.loads(await ws.recv())
        self.frames.append(hello)
        welcome = Welcome(
            kit_id=hello["kit_id"], name="k", health_interval_s=0.2, server_time=time.time() + 3600
        )
        await ws.send(welcome.model_dump_json())

        async def pump() -> None:
            while True:
                await ws.send(await self.to_send.get())

        task = asyncio.create_task(pump())
        try:
            async for frame in ws:
                self.frames.append(json.loads(frame))
        finally:
            task.cancel()

    def healths(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == "health"]


@contextlib.asynccontextmanager
async def fake_server() -> AsyncIterator[tuple[FakeServer, int]]:
    server = FakeServer()
    async with serve(server.handler, "127.0.0.1", 0) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        yield server, port


@contextlib.asynccontextmanager
async def running_client(
    port: int, tmp_path: Path, options: ServerLinkConfig | None = None
) -> AsyncIterator[LinkClient]:
    config = agent_config(state_dir=str(tmp_path))
    session = ClassSession(config, "")
    credential = Credential(f"http://127.0.0.1:{port}", "kit-0011aabbccdd", "s" * 43)
    client = LinkClient(
        credential,
        session,
        PushedConfigs(config, tmp_path),
        HealthCollector(session, tmp_path),
        options or ServerLinkConfig(reconnect_min_s=0.1),
    )
    task = asyncio.create_task(client.run())
    try:
        yield client
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        client.close()


async def test_kit_takes_the_servers_ice_servers_until_they_expire(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    async with fake_server() as (server, port), running_client(port, tmp_path) as client:
        await until(lambda: server.healths())
        assert "ice_servers" in server.frames[0]["features"]
        # A server that never sent ice_servers may not know the report's "network".
        assert all("network" not in h["report"] for h in server.healths())
        network = client.session.network
        turn = PushedIceServer(
            urls=["turn:127.0.0.1:9?transport=udp"], username="9:kit", credential=SECRET_CREDENTIAL
        )
        # The server's clock is an hour ahead of the kit's: expires_at is read in its clock.
        message = IceServers(ice_servers=[turn], expires_at=time.time() + 3600 + 1.0)
        await server.to_send.put(message.model_dump_json())
        await until(lambda: network.endpoints())
        assert [p.url for p in network.endpoints()] == ["turn:127.0.0.1:9?transport=udp"]
        assert 0 < (network.expires_in() or 0) <= 1.0
        await until(lambda: any("network" in h["report"] for h in server.healths()))
        report = [h for h in server.healths() if "network" in h["report"]][-1]["report"]
        assert report["network"]["reach"] in ("unknown", "none")
        assert report["network"]["paths"] == {}
        await until(lambda: not network.endpoints(), timeout=3)  # expired
    logged = caplog.text
    assert SECRET_CREDENTIAL not in logged and "9:kit" not in logged
    files = await asyncio.to_thread(lambda: [p for p in tmp_path.rglob("*") if p.is_file()])
    assert not any(SECRET_CREDENTIAL in p.read_text(errors="replace") for p in files)


async def test_an_invalid_ice_server_is_left_out_not_fatal(tmp_path: Path) -> None:
    async with fake_server() as (server, port), running_client(port, tmp_path) as client:
        await until(lambda: server.healths())
        bad = PushedIceServer(urls=["http://nope.example.fr"])
        good = PushedIceServer(urls=["stun:127.0.0.1:9"])
        message = IceServers(ice_servers=[bad, good], expires_at=time.time() + 7200)
        await server.to_send.put(message.model_dump_json())
        await until(lambda: client.session.network.endpoints())
        assert [p.url for p in client.session.network.endpoints()] == ["stun:127.0.0.1:9"]
        assert client.state == "connected" and client.connects == 1


# -- an explicit HTTP proxy -----------------------------------------------------------------------


class ConnectProxy:
    """The smallest HTTP proxy: CONNECT (what https and wss use) and absolute-form requests
    (plain http through a forward proxy); records what it was asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, version = head.split(b"\r\n", 1)[0].decode().split(" ")
            self.asked.append(f"{method} {target}")
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                rest = target.split("://", 1)[1]
                hostport, _, path = rest.partition("/")
                host, _, port = hostport.rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                _, _, headers = head.partition(b"\r\n")
                up_writer.write(f"{method} /{path} {version}\r\n".encode() + headers)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()


@contextlib.asynccontextmanager
async def proxy_server() -> AsyncIterator[tuple[ConnectProxy, str]]:
    proxy = ConnectProxy()
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield proxy, f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def test_link_goes_through_the_configured_proxy_and_ignores_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing there
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("all_proxy", "http://127.0.0.1:9")
    async with fake_server() as (server, port), running_client(port, tmp_path) as client:
        await until(lambda: client.state == "connected")  # direct: the environment is ignored
    async with proxy_server() as (proxy, url), fake_server() as (server, port):
        options = ServerLinkConfig(reconnect_min_s=0.1, proxy=url)
        async with running_client(port, tmp_path, options) as client:
            await until(lambda: server.healths())
            assert proxy.asked == [f"CONNECT 127.0.0.1:{port}"]
            assert server.paths == [LINK_PATH]


async def test_enrollment_goes_through_the_proxy() -> None:
    async def enroll_handler(request: web.Request) -> web.Response:
        return web.json_response({"kit_id": "kit-0011aabbccdd", "secret": "s" * 43}, status=201)

    app = web.Application()
    app.router.add_post(ENROLL_PATH, enroll_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with proxy_server() as (proxy, url):
            credential = await enroll(f"http://127.0.0.1:{port}", "CODE", proxy=url)
            assert credential.kit_id == "kit-0011aabbccdd"
            assert proxy.asked == [f"POST http://127.0.0.1:{port}{ENROLL_PATH}"]
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    "proxy",
    ["proxy.lycee.fr:3128", "socks5://p:1080", "http://p", "http://p:3128/path", "http://p:x"],
)
def test_a_proxy_setting_that_is_not_http_host_port_is_refused(proxy: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.proxy"):
        config_from_dict({"server": {"proxy": proxy}})


def test_a_good_proxy_setting() -> None:
    config = config_from_dict({"server": {"proxy": "http://proxy.lycee.fr:3128/"}})
    assert config.server.proxy == "http://proxy.lycee.fr:3128"
