"""Fixtures for the provisioning server: a real PostgreSQL (started as ``postgres`` in a
temporary directory), a live server on loopback over SQLite or PostgreSQL, and real agents
enrolled on it and linked over real WebSockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from agent.http.app import make_app as make_agent_app
from agent.link import Uplink
from agent.link.credential import enroll, save_credential
from agent.session import ClassSession
from agent.webrtc.ice import restrict_host_addresses
from bench.postgres import postgres as pg_server
from provisioning import store
from provisioning.app import make_app
from provisioning.auth import hash_password
from provisioning.fleet import Settings
from provisioning.server import Server, ServerOptions
from tests.conftest import LOOPBACK, LiveAgent, agent_config, pending_tasks, until

ADMIN_PASSWORD = "correct horse battery staple"
# Fast reports; offline after 10 missed ones (a load spike on a shared CI runner must not
# drop a link in the middle of an unrelated test).
FAST = Settings(health_interval_s=0.3, offline_after_s=3.0, history_every_s=0.0)


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server for the whole test session: ``postgresql://postgres@127.0.0.1:PORT``
    (bench/postgres.py: as the ``postgres`` user when run as root)."""
    with pg_server() as server:
        yield server.url


_databases = iter(range(1, 1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
async def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database of each kind (one fresh PostgreSQL database per test)."""
    if request.param == "sqlite":
        return ""
    base = request.getfixturevalue("postgres")
    name = f"test_{os.getpid()}_{next(_databases)}"
    connection = await asyncpg.connect(base + "/postgres")
    try:
        await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()
    return f"{base}/{name}"


@dataclass
class LiveServer:
    url: str
    server: Server
    http: aiohttp.ClientSession
    runner: web.AppRunner
    options: ServerOptions
    admins: dict[str, dict[str, str]] = field(default_factory=dict)
    clients: dict[str, aiohttp.ClientSession] = field(default_factory=dict)

    async def admin(self, email: str, role: str = "national", scope: str = "") -> dict[str, str]:
        """Create an admin, sign in with a client of its own; returns {"csrf": …}."""
        await store.add_user(
            self.server.engine, email, hash_password(ADMIN_PASSWORD), role, scope, "test"
        )
        client = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        async with client.post(
            self.url + "/api/v1/login", json={"email": email, "password": ADMIN_PASSWORD}
        ) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        self.admins[email] = {"csrf": body["csrf"]}
        self.clients[email] = client
        return self.admins[email]

    async def call(
        self, email: str, method: str, path: str, body: Any = None, csrf: bool = True
    ) -> tuple[int, Any]:
        headers = {"X-CSRF-Token": self.admins[email]["csrf"]} if csrf else {}
        client = self.clients[email]
        async with client.request(method, self.url + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)

    async def school(self, school_id: str, departement: str = "75") -> None:
        await store.add_school(self.server.engine, school_id, f"École {school_id}", departement)

    async def code(self, school_id: str, uses: int = 1, expires_s: float = 3600) -> str:
        return await store.create_enrollment_code(
            self.server.engine, school_id, uses, time.time() + expires_s, "test"
        )

    async def close_clients(self) -> None:
        for client in self.clients.values():
            await client.close()


async def start_server(options: ServerOptions, port: int = 0) -> tuple[Server, web.AppRunner, int]:
    server = await Server.open(options)
    server.start()
    runner = web.AppRunner(make_app(server), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, port, reuse_address=True)
    await site.start()
    return server, runner, runner.addresses[0][1]


async def stop_server(server: Server, runner: web.AppRunner) -> None:
    await runner.cleanup()
    await server.close()


def server_options(tmp_path: Path, db_url: str, **changes: Any) -> ServerOptions:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "server",
        "db": db_url,
        "fleet": FAST,
        "sweep_interval_s": 0.1,
        "flush_interval_s": 0.05,
        "relay_timeout_s": 10.0,
        "hello_timeout_s": 1.0,
        **changes,
    }
    return ServerOptions(**values)


@contextlib.asynccontextmanager
async def serving(options: ServerOptions) -> AsyncIterator[LiveServer]:
    """A server with ``options`` on loopback, stopped (its clients closed) on exit."""
    server, runner, port = await start_server(options)
    async with aiohttp.ClientSession() as http:
        live = LiveServer(f"http://{LOOPBACK}:{port}", server, http, runner, options)
        try:
            yield live
        finally:
            await live.close_clients()
            await stop_server(live.server, live.runner)


@pytest.fixture
async def live_server(tmp_path: Path, db_url: str) -> AsyncIterator[LiveServer]:
    async with serving(server_options(tmp_path, db_url)) as live:
        yield live


@dataclass
class LinkedAgent(LiveAgent):
    uplink: Uplink | None = None
    state_dir: Path = Path()

    @property
    def kit_id(self) -> str:
        assert self.uplink is not None
        return self.uplink.credential.kit_id

    @property
    def link(self) -> Any:
        assert self.uplink is not None and self.uplink.client is not None
        return self.uplink.client


async def run_linked_agent(
    server_url: str, code: str, state_dir: Path, name: str = "", **overrides: Any
) -> AsyncIterator[LinkedAgent]:
    """``overrides``: config sections, as for :func:`tests.conftest.agent_config`."""
    restrict_host_addresses([LOOPBACK])
    credential = await enroll(server_url, code, name)
    save_credential(state_dir, credential)
    config = agent_config(
        state_dir=str(state_dir),
        server={"reconnect_min_s": 0.05, "reconnect_max_s": 1.0, "keepalive_s": 5},
        **overrides,
    )
    uplink = Uplink.from_config(config)
    assert uplink is not None
    session = ClassSession(uplink.startup_config(), "")
    runner = web.AppRunner(make_agent_app(session), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, 0).start()
    session.base_url = uplink.join_base_url or ""
    uplink.start(session)
    try:
        async with aiohttp.ClientSession() as http:
            base = f"http://{LOOPBACK}:{runner.addresses[0][1]}"
            live = LinkedAgent(base, session, http, uplink=uplink, state_dir=state_dir)
            try:
                yield live
            finally:
                await asyncio.gather(
                    *(p.close(delete=False) for p in live.receivers), return_exceptions=True
                )
    finally:
        await uplink.close()
        await session.stop()
        await runner.cleanup()


AgentMaker = Callable[..., Awaitable[LinkedAgent]]


@pytest.fixture
async def linked_agent(live_server: LiveServer, tmp_path: Path) -> AsyncIterator[AgentMaker]:
    """``await linked_agent(school="0751234A")``: a real agent enrolled and linked."""
    counter = iter(range(1000))
    async with contextlib.AsyncExitStack() as stack:

        async def make(school: str = "0751234A", name: str = "", **overrides: Any) -> LinkedAgent:
            if await store.get_school(live_server.server.engine, school) is None:
                await live_server.school(school)
            code = await live_server.code(school)
            generator = run_linked_agent(
                live_server.url, code, tmp_path / f"kit{next(counter)}", name, **overrides
            )
            agent = await generator.__anext__()
            stack.push_async_callback(_finish, generator)
            await asyncio.wait_for(agent.link.wait_connected(), 10)
            return agent

        yield make
    await until(lambda: not [t for t in pending_tasks() if "server-link" in t.get_name()], 3)


async def _finish(generator: AsyncIterator[LinkedAgent]) -> None:
    with contextlib.suppress(StopAsyncIteration):
        await generator.__anext__()


@contextlib.asynccontextmanager
async def admin_page(
    url: str, email: str = "root@example.fr"
) -> AsyncIterator[tuple[Any, list[str]]]:
    """The admin UI in a real Chromium (French), signed in as ``email``: (page, the page's
    uncaught errors)."""
    from playwright.async_api import async_playwright

    from tests.chromium import CHROMIUM, CHROMIUM_ARGS

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context(locale="fr-FR")).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(url + "/admin/")
            await page.fill("#login-email", email)
            await page.fill("#login-password", ADMIN_PASSWORD)
            await page.click("#login-form button")
            yield page, errors
        finally:
            await browser.close()
