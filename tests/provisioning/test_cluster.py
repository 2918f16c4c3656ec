"""Several ``kit-provisioning serve`` nodes on one PostgreSQL (docs/cluster.md).

End to end, with real processes: two nodes, a real agent linked to node A through a small
front (a TCP forwarder standing in for the load balancer: it sends new connections to the
first node of its list that accepts), a real aiortc pupil joining through node B, an admin's
event stream on B, node A killed with SIGKILL; the command line's refusals. The rules without
processes are in test_cluster_rules.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import sqlalchemy as sa
from websockets.asyncio.client import connect

from agent.link.credential import enroll
from kitlink import LINK_PATH, VERSION, Hello, SessionInfo, encode, token_digest
from provisioning import cluster, store
from provisioning.cluster import (
    ForwardAuth,
    resource_node,
    stale_before,
)
from provisioning.db import database_url, open_database
from provisioning.server import ServerOptions
from provisioning.tables import kits
from tests.agentproc import free_port
from tests.conftest import until
from tests.provisioning.conftest import ADMIN_PASSWORD, run_linked_agent, server_options, serving

REPO = Path(__file__).resolve().parents[2]
SECRET = "cluster-secret-for-tests-0123456789"
TURN_URL = "turn:192.0.2.10:3478?transport=udp"  # never contacted: OPTIONS only names it


def test_cli_refuses_bad_cluster_options(tmp_path: Path) -> None:
    for argv in (
        ["--node-url", "ftp://10.0.0.2"],
        ["--node-id", "a/b", "--node-url", "http://10.0.0.2:1"],
    ):
        done = _cli(tmp_path, "serve", *argv, check=False)
        assert done.returncode == 2 and "--node-" in done.stderr, done.stderr
    env = {"KIT_PROVISIONING_CLUSTER_SECRET_FILE": str(tmp_path / "s")}
    argv = ("--http", "127.0.0.1:0", "--node-url", "http://10.0.0.2:1")
    done = _cli(tmp_path, "serve", *argv, check=False, env=env)
    assert done.returncode == 1 and "PostgreSQL" in done.stderr, done.stderr


# -- real processes -------------------------------------------------------------------------------


def _cli(
    data: Path, *argv: str, check: bool = True, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "provisioning.cli", *argv, "--data-dir", str(data)]
    done = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
        env={**os.environ, **(env or {})},
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


@dataclass
class Node:
    name: str
    port: int
    process: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _start_node(
    name: str, data: Path, db: str, secret: Path, log: Path, extra: tuple[str, ...] = ()
) -> Node:
    port = free_port()
    argv = [
        "serve", "--http", f"127.0.0.1:{port}", "--db", db, "--node-id", name,
        "--node-url", f"http://127.0.0.1:{port}", "--cluster-secret-file", str(secret),
        "--health-interval", "0.5", "--offline-after", "5", "--history-every", "0",
        "--node-dead-after", "10", *extra,
    ]  # fmt: skip
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "provisioning.cli", *argv, "--data-dir", str(data / name)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    return Node(name, port, process)


async def _ready(node: Node) -> None:
    assert node.process.stdout is not None
    async with asyncio.timeout(30):
        line = await asyncio.to_thread(node.process.stdout.readline)
    assert f"node {node.name}" in line, line


class Front:
    """A TCP forwarder standing in for the load balancer: each new connection goes to the
    first port of :attr:`backends` that accepts it (none: the connection is closed)."""

    def __init__(self) -> None:
        self.backends: list[int] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for port in list(self.backends):
            with contextlib.suppress(OSError):
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                break
        else:
            writer.close()
            return
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        sink.close()

    async def close(self) -> None:
        for task in list(self._pipes):
            task.cancel()
        if self._server is not None:
            self._server.close()


class Events:
    """An admin's event stream (``GET /api/v1/events``) on one node, collected."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.kit_events: list[dict[str, Any]] = []
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        self.task: asyncio.Task[None] | None = None
        self.csrf = ""

    async def start(self, email: str) -> None:
        body = {"email": email, "password": ADMIN_PASSWORD}
        async with self.http.post(self.base + "/api/v1/login", json=body) as response:
            assert response.status == 200, await response.text()
            self.csrf = (await response.json())["csrf"]
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async with self.http.get(self.base + "/api/v1/events") as response:
            async for line in response.content:
                if line.startswith(b"data: ") and line.strip() != b"data: {}":
                    self.kit_events.append(json.loads(line[6:]))

    def of(self, kit_id: str) -> list[dict[str, Any]]:
        return [e for e in self.kit_events if e.get("id") == kit_id]

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.http.close()


@pytest.fixture
async def database(postgres: str) -> AsyncIterator[str]:
    name = f"cluster_{os.getpid()}_{int(time.monotonic() * 1000)}"
    connection = await asyncpg.connect(postgres + "/postgres")
    try:
        await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()
    yield f"{postgres}/{name}"


def secret_file(tmp_path: Path) -> Path:
    """The cluster's shared secret, as an operator would keep it (mode 0600)."""
    secret = tmp_path / "cluster-secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    return secret


def node_a_options(tmp_path: Path, database: str, **changes: Any) -> ServerOptions:
    """In-process server options for cluster node ``a`` on a free port."""
    return server_options(
        tmp_path,
        database,
        node_id="a",
        node_url=f"http://127.0.0.1:{free_port()}",
        cluster_secret_file=secret_file(tmp_path),
        **changes,
    )


@dataclass
class Cluster2:
    db: str
    data: Path
    secret: Path
    nodes: dict[str, Node]
    front: Front


@pytest.fixture
async def two_nodes(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> AsyncIterator[Cluster2]:
    """Nodes a and b; ``indirect`` parameter "turn": both with a TURN setting."""
    data = tmp_path / "data"
    secret = secret_file(tmp_path)
    extra: tuple[str, ...] = ()
    if getattr(request, "param", None) == "turn":
        turn_secret = tmp_path / "turn-secret"
        turn_secret.write_text("turn-secret-for-tests-0123456789\n")
        turn_secret.chmod(0o600)
        extra = ("--turn-url", TURN_URL, "--turn-secret-file", str(turn_secret))
    db = ["--db", database]
    _cli(data, "school", "add", "0751234A", "--name", "École", "--departement", "75", *db)
    _cli(data, "user", "add", "admin@example.fr", "--role", "national", *db, stdin=ADMIN_PASSWORD)
    nodes: dict[str, Node] = {}
    front = Front()
    await front.start()
    try:
        for name in ("a", "b"):
            log = tmp_path / f"{name}.log"
            nodes[name] = _start_node(name, data, database, secret, log, extra)
        await asyncio.gather(*(_ready(node) for node in nodes.values()))
        yield Cluster2(database, data, secret, nodes, front)
    finally:
        await front.close()
        for node in nodes.values():
            if node.process.poll() is None:
                node.process.terminate()
        for node in nodes.values():
            try:
                node.process.wait(30)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
        for name in nodes:
            log = (tmp_path / f"{name}.log").read_text(errors="replace")
            assert "Traceback" not in log, log[-4000:]


async def _code(two: Cluster2) -> str:
    """An enrollment code (the CLI in a thread: the agent shares this event loop)."""
    argv = ("enrollment-code", "create", "--school", "0751234A", "--db", two.db)
    done = await asyncio.to_thread(_cli, two.data, *argv)
    return done.stdout.strip()


async def _raw_kit(url: str, kit_id: str, secret: str, digest: str) -> Any:
    """A kit speaking the protocol by hand, its class live under ``digest``."""
    ws = await connect(url.replace("http://", "ws://") + LINK_PATH, open_timeout=5)
    hello = Hello(
        v=VERSION,
        kit_id=kit_id,
        secret=secret,
        software="raw",
        session=SessionInfo(state="live", token_sha256=digest),
    )
    await ws.send(encode(hello))
    return ws


async def _owner(db: str, digest: str) -> str | None:
    connection = await asyncpg.connect(db)
    try:
        return await connection.fetchval("SELECT kit_id FROM class_tokens WHERE digest=$1", digest)
    finally:
        await connection.close()


async def _eventually(probe: Callable[[], Awaitable[object]], timeout: float, what: str) -> None:
    for _ in range(int(timeout / 0.1)):
        if await probe():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not true after {timeout} s")


async def _refused(node: Node, events: Events, digest: str) -> list[dict[str, Any]]:
    """The refused claims of the class ``digest`` in the audit log."""
    return [
        e
        for e in await _audit(node, events)
        if e["action"] == "class.claim.refused" and e["detail"].get("digest") == digest[:16]
    ]


async def _metric(http: aiohttp.ClientSession, node: Node, name: str) -> float:
    async with http.get(node.url + "/metrics") as response:
        text = await response.text()
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith(name)))


async def _audit(node: Node, events: Events) -> list[dict[str, Any]]:
    async with events.http.get(node.url + "/api/v1/audit?limit=50") as response:
        assert response.status == 200
        body = await response.json()
    return list(body["entries"])


@pytest.mark.slow
async def test_two_nodes_a_pupil_through_b_and_node_a_killed(
    two_nodes: Cluster2, tmp_path: Path
) -> None:
    a, b = two_nodes.nodes["a"], two_nodes.nodes["b"]
    front = two_nodes.front
    front.backends = [a.port]
    events = Events(b.url)
    await events.start("admin@example.fr")
    agent_run = run_linked_agent(front.url, await _code(two_nodes), tmp_path / "kit")
    agent = await agent_run.__anext__()
    try:
        async with asyncio.timeout(10):
            await agent.link.wait_connected()
        kit_id = agent.kit_id
        # Node B's admin sees node A's kit come online (LISTEN/NOTIFY).
        await until(lambda: any(e["online"] for e in events.of(kit_id)), 5, "online seen on B")
        # A configuration stored through node B reaches the kit linked to node A (idle: a
        # live class defers it).
        before = events.of(kit_id)[-1]["config"]["desired"]

        def applied_anew() -> bool:
            configs = [e["config"] for e in events.of(kit_id)]
            return any(c["desired"] != before and c["applied"] == c["desired"] for c in configs)

        headers = {"X-CSRF-Token": events.csrf}
        path = f"{b.url}/api/v1/config/kit/{kit_id}"
        async with events.http.put(path, json={"camera": {"fps": 12}}, headers=headers) as r:
            assert r.status == 200, await r.text()
        await until(lambda: agent.session.config.camera.fps == 12, 10, "pushed by node A")
        await until(applied_anew, 5, "the kit's acknowledgement seen on B")

        whep = await agent.start()
        token = whep.rsplit("/", 1)[1]
        digest = token_digest(token)

        async def claimed() -> bool:  # by the database, on node A
            return await _owner(two_nodes.db, digest) == kit_id

        await _eventually(claimed, 5, "the class bound to the kit")
        # A pupil joins through node B: forwarded to A, the answer comes back unchanged.
        started = time.monotonic()
        pupil = agent.receiver(f"{b.url}/whep/{token}")
        await pupil.connect()
        join_s = time.monotonic() - started
        assert pupil.location is not None and pupil.location.startswith(b.url + "/whep/resource/")
        assert resource_node(pupil.location.rsplit("/", 1)[1]) == "a"
        await pupil.wait_frames("camera", 5)
        await until(lambda: any(e["session"] == "live" for e in events.of(kit_id)), 5, "live on B")
        await pupil.close()  # DELETE through B, forwarded to A
        await until(lambda: not agent.session.viewers, 5, "DELETE relayed to the kit")

        # Forwarding headers without the cluster's signature: refused.
        spoofed = {cluster.HEADER_PUPIL: "203.0.113.9", "Content-Type": "application/sdp"}
        async with events.http.post(f"{a.url}/whep/{token}", data=b"v=0\r\n", headers=spoofed) as r:
            assert r.status == 403
        assert await _metric(events.http, b, "provisioning_cluster_forwarded_total") == 2
        assert await _metric(events.http, a, "provisioning_forwarded_refused_total") == 1
        # Another kit claiming this class through node B is refused; its class stays kit 1's.
        intruder = await enroll(front.url, await _code(two_nodes), "intruder")
        ws = await _raw_kit(b.url, intruder.kit_id, intruder.secret, digest)

        async def refused() -> bool:
            return any(e["action"] == "class.claim.refused" for e in await _audit(b, events))

        await _eventually(refused, 5, "the claim refused on B")
        await ws.close()
        assert await _owner(two_nodes.db, digest) == kit_id

        # A pupil connected before node A dies keeps its picture (media is kit ↔ pupil).
        stayer = agent.receiver(f"{b.url}/whep/{token}")
        await stayer.connect()
        await stayer.wait_frames("camera", 30, timeout=20)
        front.backends = []  # the kit cannot reconnect yet: its node is dead to the cluster
        seen = len(events.of(kit_id))  # (its enrollment's event, offline, may be among them)

        def since_kill(online: bool) -> list[dict[str, Any]]:
            return [e for e in events.of(kit_id)[seen:] if e["online"] is online]

        killed = time.monotonic()
        a.process.send_signal(signal.SIGKILL)
        await asyncio.to_thread(a.process.wait, 10)
        frames = stayer.tracks["camera"].frames
        await until(lambda: bool(since_kill(False)), 20, "taken over: offline")
        taken_over_s = time.monotonic() - killed
        assert taken_over_s > 8.0  # not before its heartbeat is 10 s old (--node-dead-after 10)
        state = (stayer.pc.connectionState, len(agent.session.viewers), frames)
        assert stayer.tracks["camera"].frames > frames + 30, f"the class went on: {state}"
        front.backends = [b.port]
        await until(lambda: events.of(kit_id)[-1]["online"], 15, "online again on B")
        back_s = time.monotonic() - killed
        states = [e["online"] for e in events.of(kit_id)[seen:]]
        assert states[0] is False and states.count(False) == 1, states  # offline once, then on
        # A pupil joins the class on its new node.
        late = agent.receiver(f"{b.url}/whep/{token}")
        await late.connect()
        await late.wait_frames("camera", 5)
        assert late.location is not None and resource_node(late.location.rsplit("/", 1)[1]) == "b"
        print(
            {
                "join_through_b_s": round(join_s, 2),
                "taken_over_after_kill_s": round(taken_over_s, 1),
                "online_on_b_after_kill_s": round(back_s, 1),
            }
        )
    finally:
        await events.close()
        with contextlib.suppress(StopAsyncIteration):
            await agent_run.__anext__()


@pytest.mark.slow
async def test_two_kits_claiming_one_class_on_two_nodes_one_wins(two_nodes: Cluster2) -> None:
    a, b = two_nodes.nodes["a"], two_nodes.nodes["b"]
    first = await enroll(a.url, await _code(two_nodes), "first")
    second = await enroll(b.url, await _code(two_nodes), "second")
    events = Events(a.url)
    await events.start("admin@example.fr")
    try:
        for round_ in range(3):
            digest = token_digest(f"class-{round_}-{time.time()}")
            sockets = await asyncio.gather(
                _raw_kit(a.url, first.kit_id, first.secret, digest),
                _raw_kit(b.url, second.kit_id, second.secret, digest),
            )
            await _eventually(partial(_refused, a, events, digest), 5, "one claim refused")
            refused = await _refused(a, events, digest)
            owner = await _owner(two_nodes.db, digest)
            loser = second.kit_id if owner == first.kit_id else first.kit_id
            assert [e["actor"] for e in refused] == [f"kit:{loser}"]
            for ws in sockets:
                await ws.close()
    finally:
        await events.close()


@pytest.mark.slow
async def test_a_lost_listen_connection_is_reopened_and_events_flow_again(
    two_nodes: Cluster2, tmp_path: Path
) -> None:
    a, b = two_nodes.nodes["a"], two_nodes.nodes["b"]
    events = Events(b.url)
    await events.start("admin@example.fr")
    try:
        connection = await asyncpg.connect(two_nodes.db)
        try:
            killed = await connection.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        finally:
            await connection.close()
        assert killed == 2  # one per node

        async def listening() -> bool:
            log = (tmp_path / "b.log").read_text()
            lost = "cluster events: connection lost" in log
            return lost and await _metric(events.http, b, "provisioning_cluster_listening") == 1

        await _eventually(listening, 10, "node B listening again")
        credential = await enroll(a.url, await _code(two_nodes), "after")
        await until(lambda: bool(events.of(credential.kit_id)), 5, "B saw A's new kit")
    finally:
        await events.close()


async def test_forwarded_offers_are_limited_per_pupil_not_per_node(
    tmp_path: Path, database: str
) -> None:
    options = node_a_options(tmp_path, database, whep_burst=3)
    auth = ForwardAuth(SECRET.encode())
    path = "/whep/no-such-class"
    async with serving(options) as live:

        async def offer(pupil: str) -> int:
            headers = {**auth.sign("POST", path, pupil, "b"), "Content-Type": "application/sdp"}
            async with live.http.post(live.url + path, data=b"v=0\r\n", headers=headers) as r:
                return r.status

        assert [await offer("198.51.100.7") for _ in range(4)] == [404, 404, 404, 429]
        assert await offer("198.51.100.8") == 404  # another pupil behind the same node
        async with live.http.post(live.url + path, headers={cluster.HEADER_PUPIL: "x"}) as r:
            assert r.status == 403


async def test_two_survivors_take_a_dead_node_over_exactly_once(database: str) -> None:
    engines = [await open_database(database_url(database, Path())) for _ in range(2)]
    listener = await asyncpg.connect(database)
    heard: list[str] = []
    await listener.add_listener("fleet", lambda *args: heard.append(args[-1]))
    try:
        engine = engines[0]
        await store.add_school(engine, "0751234A", "École", "75")
        now = time.time()
        await store.register_node(engine, "dead", "http://192.0.2.1:8443", now - 60)
        kit_ids = []
        for number in range(3):
            code = await store.create_enrollment_code(engine, "0751234A", 1, now + 60, "test")
            enrolled = await store.enroll(engine, code, f"kit {number}", now)
            assert enrolled is not None
            kit_ids.append(enrolled[0]["id"])
        await store.write_links(engine, "dead", kit_ids[:2], [], [], now - 60)
        for round_ in range(5):  # the race, five times (the dead row comes back each round)
            if round_:
                await store.register_node(engine, "dead", "http://192.0.2.1:8443", now - 60)
                await store.write_links(engine, "dead", kit_ids[:2], [], [], now - 60)
            taken = await asyncio.gather(
                *(
                    store.take_over_nodes(e, me, stale_before(now), now, lambda dead: dead)
                    for e, me in zip(engines, ("b", "c"), strict=True)
                )
            )
            assert sorted(taken, key=len) == [[], ["dead"]], taken
            async with engine.connect() as conn:
                rows = (
                    await conn.execute(sa.select(kits.c.id, kits.c.online, kits.c.link_node))
                ).all()
            assert {r.id: (r.online, r.link_node) for r in rows} == {
                kit_id: (False, None) for kit_id in kit_ids
            }
        await until(lambda: len(heard) >= 5, 5, "the announcements")
        assert heard == ["dead"] * 5  # once per take-over
    finally:
        await listener.close()
        for engine in engines:
            await engine.dispose()


async def test_a_starting_node_marks_offline_only_its_own_and_orphaned_kits(database: str) -> None:
    engine = await open_database(database_url(database, Path()))
    try:
        now = time.time()
        await store.add_school(engine, "0751234A", "École", "75")
        await store.register_node(engine, "a", "http://192.0.2.1:8443", now)
        await store.register_node(engine, "b", "http://192.0.2.2:8443", now)
        holders = {"on-a": "a", "on-b": "b", "on-gone": "gone"}
        ids = {}
        for name, node in holders.items():
            code = await store.create_enrollment_code(engine, "0751234A", 1, now + 60, "test")
            enrolled = await store.enroll(engine, code, name, now)
            assert enrolled is not None
            ids[name] = enrolled[0]["id"]
            await store.write_links(engine, node, [ids[name]], [], [], now)
        assert await store.release_on_start(engine, "a", now) == 2
        async with engine.connect() as conn:
            query = sa.select(kits.c.name, kits.c.online, kits.c.link_node)
            rows = {r.name: (r.online, r.link_node) for r in await conn.execute(query)}
        assert rows == {"on-a": (False, None), "on-b": (True, "b"), "on-gone": (False, None)}
    finally:
        await engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("two_nodes", ["turn"], indirect=True)
async def test_a_pupil_s_ice_servers_come_from_the_kit_s_node(two_nodes: Cluster2) -> None:
    a, b = two_nodes.nodes["a"], two_nodes.nodes["b"]
    kit = await enroll(a.url, await _code(two_nodes), "kit")
    token = "a-class-token-for-the-options-test"
    ws = await _raw_kit(a.url, kit.kit_id, kit.secret, token_digest(token))
    try:

        async def claimed() -> bool:
            return await _owner(two_nodes.db, token_digest(token)) == kit.kit_id

        await _eventually(claimed, 5, "the class bound")
        async with aiohttp.ClientSession() as http:
            links: list[str] = []

            async def ice_servers() -> bool:  # once node B has heard of the class (~0.1 s)
                async with http.options(f"{b.url}/whep/{token}") as response:
                    assert response.status == 204
                    assert response.headers["Accept-Post"] == "application/sdp"
                    links[:] = response.headers.getall("Link", [])
                return bool(links)

            await _eventually(ice_servers, 5, "ICE servers through node B")
            assert any(TURN_URL.split("?")[0] in link and "username=" in link for link in links)
            assert await _metric(http, b, "provisioning_cluster_forwarded_total") == 1
            preflight = {"Access-Control-Request-Method": "POST", "Origin": "https://x.example"}
            async with http.options(f"{b.url}/whep/{token}", headers=preflight) as response:
                assert response.status == 204 and not response.headers.getall("Link", [])
            assert await _metric(http, b, "provisioning_cluster_forwarded_total") == 1  # local
    finally:
        await ws.close()


@pytest.mark.slow
async def test_a_node_that_lost_postgresql_is_not_ready_but_stays_alive(
    tmp_path: Path, database: str
) -> None:
    """HAProxy checks /readyz: a node that cannot write its heartbeat leaves the rotation
    before the others take its kits over; /healthz (the watchdog) stays 200, so a database
    outage does not get the node restarted; it is ready again once PostgreSQL is back."""
    options = node_a_options(tmp_path, database, node_dead_after_s=6.0)
    name = database.rsplit("/", 1)[1]
    admin = await asyncpg.connect(database.rsplit("/", 1)[0] + "/postgres")
    try:
        async with serving(options) as live:

            async def status(path: str) -> int:
                async with live.http.get(live.url + path) as response:
                    return response.status

            assert await status("/readyz") == 200
            await admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            await _eventually(lambda: _is(status("/readyz"), 503), 10, "/readyz 503")
            assert await status("/healthz") == 200
            async with live.http.get(live.url + "/readyz") as response:
                assert "heartbeat" in (await response.json())["problem"]
            await admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
            await _eventually(lambda: _is(status("/readyz"), 200), 10, "/readyz 200 again")
    finally:
        await admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
        await admin.close()


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
