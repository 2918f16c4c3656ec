"""The server's parts, wired once: database, writer, fleet, relay, link endpoint, background
tasks (batched writes, offline sweep, history pruning). ``kit-provisioning serve`` and the
tests both build a :class:`Server` and serve :func:`provisioning.app.make_app` of it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.ext.asyncio import AsyncEngine

from . import store
from .cluster import DEAD_AFTER_S, HEARTBEAT_S, Cluster, ForwardAuth, check_node_id
from .db import checkpoint, database_url, open_database
from .errors import ConfigError
from .fleet import ENDED_TOKENS_KEEP_S, Fleet, Settings
from .forwarded import ClientAddresses
from .ice import DEFAULT_CLASS_S, DEFAULT_MARGIN_S, IceIssuer, load_turn
from .limits import Backoff, LoginThrottle, RateLimit
from .link import LinkEndpoint
from .relay import Relay
from .turn import read_secret_file
from .writer import Writer

log = logging.getLogger("provisioning.server")


@dataclass(frozen=True, slots=True)
class ServerOptions:
    data_dir: Path
    db: str = ""
    public_url: str = ""
    """Base URL of this server as kits and pupils reach it (join links); empty = request's."""
    fleet: Settings = field(default_factory=Settings)
    flush_interval_s: float = 0.05
    sweep_interval_s: float = 1.0
    relay_timeout_s: float = 15.0
    hello_timeout_s: float = 10.0
    session_lifetime_s: float = 12 * 3600.0
    login_free_failures: int = 5
    """Wrong passwords before sign-in delays start (then 1 s, doubling; provisioning/limits.py)."""
    trusted_proxies: tuple[str, ...] = ()
    """Reverse proxies (addresses or networks) whose forwarding header gives the client's
    address (provisioning/forwarded.py); none by default."""
    forwarded_header: str = "x-forwarded-for"
    whep_burst: int = 20
    whep_rate_per_s: float = 1.0
    """``POST /whep/<token>`` per client address: a burst, then this many a second."""
    turn_urls: tuple[str, ...] = ()
    """The fleet's TURN server (``--turn-url``, repeatable): ``turn:HOST:PORT?transport=udp``,
    ``…?transport=tcp``, ``turns:HOST:PORT?transport=tcp`` (provisioning/turn.py)."""
    turn_secret_file: Path | None = None
    """coturn's ``static-auth-secret``, in a file of mode 0600 (``--turn-secret-file``)."""
    turn_class_s: float = DEFAULT_CLASS_S
    turn_margin_s: float = DEFAULT_MARGIN_S
    """The longest class expected and the slack after it: credential lifetimes
    (provisioning/ice.py)."""
    node_id: str = ""
    """This node's name in a cluster (``--node-id``; default ``<hostname>-<port>``)."""
    node_url: str = ""
    """How the other nodes reach this node's HTTP listener (``--node-url``): cluster mode."""
    cluster_secret_file: Path | None = None
    """The secret that signs requests forwarded between nodes, mode 0600."""
    node_dead_after_s: float = DEAD_AFTER_S
    """A node whose heartbeat is this old is taken over (``--node-dead-after``)."""


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    node_id: str
    url: str
    secret: bytes


def check_node_url(url: str) -> str:
    """``http://10.0.0.2:8443``: a scheme, a host and nothing after it (no path, query,
    credentials); returned without a trailing slash."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--node-url {url!r}: {exc}") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ConfigError(
            f"--node-url {url!r}: http(s)://HOST[:PORT] expected (this node's own listener, "
            "as the other nodes reach it)"
        )
    del port  # read for its check only (a port that is not a number)
    return f"{parts.scheme}://{parts.netloc}"


def default_node_id(url: str) -> str:
    """``<hostname>-<port>`` (made a valid id)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
    return f"{host.strip('.-_') or 'node'}"[: 63 - len(str(port))] + f"-{port}"


def load_cluster(options: ServerOptions) -> ClusterSettings | None:
    """The cluster settings checked (secret file read): :class:`ConfigError` if they are
    incomplete, wrong, or given with SQLite. None: a single node."""
    if not options.node_url:
        if options.cluster_secret_file is not None:
            raise ConfigError("--cluster-secret-file is only for a cluster: give --node-url too")
        return None
    url = check_node_url(options.node_url)
    if options.cluster_secret_file is None:
        raise ConfigError("--node-url needs --cluster-secret-file (the nodes' shared secret)")
    if not database_url(options.db, options.data_dir).startswith("postgresql"):
        raise ConfigError(
            "several nodes (--node-url) need PostgreSQL (--db postgresql://…): "
            "a SQLite database is one machine's file"
        )
    if options.node_dead_after_s < 3 * HEARTBEAT_S:
        raise ConfigError(
            f"--node-dead-after {options.node_dead_after_s:g}: at least {3 * HEARTBEAT_S:g} s "
            f"(three heartbeats of {HEARTBEAT_S:g} s)"
        )
    node_id = check_node_id(options.node_id or default_node_id(url))
    secret = read_secret_file(options.cluster_secret_file, "cluster secret file")
    return ClusterSettings(node_id, url, secret)


GC_YOUNG_THRESHOLD = 50_000


def tune_gc(server: Server) -> None:
    """Keep the cyclic garbage collector's pauses rare with 15,000 links in memory.

    Everything loaded at start-up (code, kits) is frozen out of collections, and collections
    are timed (``provisioning_gc_pause_seconds_max`` in /metrics)."""
    gc.collect()
    gc.freeze()
    # Young collections far apart, so a report's short-lived objects die before one runs rather
    # than being promoted, which would bring a full collection (~0.5 s with 15,000 links).
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)
    # SQLite's driver thread needs the GIL back after every row it steps; when the event loop is
    # saturated (all kits reconnecting at once) the default 5 ms switch interval turns a batch
    # of thousands of rows into seconds. 0.5 ms keeps the writer moving.
    sys.setswitchinterval(0.0005)
    started: list[float] = [0.0]

    def timer(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pause = time.perf_counter() - started[0]
            server.gc_pause_max = max(server.gc_pause_max, pause)
            if info.get("generation") == 2:
                server.gc_full_collections += 1

    if timer not in gc.callbacks:
        gc.callbacks.append(timer)


def load_ice(options: ServerOptions) -> IceIssuer:
    """The TURN settings checked (secret file read): raises :class:`ConfigError`."""
    turn = load_turn(
        options.turn_urls, options.turn_secret_file, options.turn_class_s, options.turn_margin_s
    )
    return IceIssuer(turn)


class Server:
    def __init__(
        self,
        options: ServerOptions,
        engine: AsyncEngine,
        ice: IceIssuer | None = None,
        cluster: ClusterSettings | None = None,
    ) -> None:
        self.options = options
        self.ice = ice if ice is not None else load_ice(options)
        self.engine = engine
        self.writer = Writer(engine, options.flush_interval_s)
        self.fleet = Fleet(engine, options.fleet, self.writer)
        self.cluster: Cluster | None = None
        if cluster is not None:
            self.cluster = Cluster(
                cluster.node_id,
                cluster.url,
                cluster.secret,
                engine,
                self.fleet,
                forward_timeout_s=options.relay_timeout_s + 5.0,
                dead_after_s=options.node_dead_after_s,
            )
            self.fleet.cluster = self.cluster
        self.forward_auth = self.cluster.auth if self.cluster else ForwardAuth(None)
        """Checks WHEP requests another node forwarded (every one refused on a single node)."""
        offers = RateLimit(options.whep_burst, options.whep_rate_per_s)
        node = cluster.node_id if cluster is not None else ""
        self.relay = Relay(self.fleet, options.relay_timeout_s, offers, node_id=node)
        self.links = LinkEndpoint(self.fleet, self.relay, options.hello_timeout_s, ice=self.ice)
        self.writer.on_stored = self.links.acknowledge
        self.ice_options_limit = RateLimit(options.whep_burst, options.whep_rate_per_s)
        """Pupil credentials minted for ``OPTIONS /whep/<token>`` per client address (the POSTs
        have the relay's limit): beyond it the answer has no ``Link`` headers."""
        self.addresses = ClientAddresses(options.trusted_proxies, options.forwarded_header)
        self.login_limiter = LoginThrottle(options.login_free_failures)
        self.enroll_limiter = Backoff(free=20, base_s=1.0, cap_s=600.0)
        self.started = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self.gc_pause_max = 0.0
        self.gc_full_collections = 0
        self.loop_lag_max = 0.0
        """Longest delay of the 1 s sweep tick: how late the event loop runs callbacks."""

    @classmethod
    async def open(cls, options: ServerOptions) -> Server:
        ice = load_ice(options)  # a bad TURN setting stops the start before the database opens
        cluster = load_cluster(options)  # and so does a bad cluster setting
        options.data_dir.mkdir(parents=True, exist_ok=True)
        engine = await open_database(database_url(options.db, options.data_dir))
        server = cls(options, engine, ice, cluster)
        if server.cluster is not None:
            await server.cluster.start_up()
        await server.fleet.load()
        return server

    def start(self) -> None:
        self.writer.start()
        self._tasks = [
            asyncio.create_task(self._sweep(), name="provisioning-sweep"),
            asyncio.create_task(self._prune(), name="provisioning-prune"),
            asyncio.create_task(self._checkpoint(), name="provisioning-checkpoint"),
        ]
        if self.cluster is not None:
            self.cluster.start()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.cluster is not None:
            await self.cluster.close()
        await self.writer.close()
        await self.engine.dispose()

    async def _sweep(self) -> None:
        while True:
            due = time.monotonic() + self.options.sweep_interval_s
            await asyncio.sleep(self.options.sweep_interval_s)
            self.loop_lag_max = max(self.loop_lag_max, time.monotonic() - due)
            self.fleet.sweep()

    async def _checkpoint(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            try:
                await checkpoint(self.engine)
            except Exception:
                log.exception("WAL checkpoint failed")

    async def _prune(self) -> None:
        while True:
            try:
                cutoff = time.time() - self.options.fleet.history_keep_s
                removed = await store.prune_history(self.engine, cutoff)
                if removed:
                    log.info("pruned %d health reports older than the history window", removed)
                ended = time.time() - ENDED_TOKENS_KEEP_S
                await store.prune_class_tokens(self.engine, ended)
            except Exception:
                log.exception("pruning the health history failed")
            await asyncio.sleep(600)
