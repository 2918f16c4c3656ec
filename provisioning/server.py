"""The server's parts, wired once: database, writer, fleet, relay, link endpoint, background
tasks (batched writes, offline sweep, history pruning). ``kit-provisioning serve`` and the
tests both build a :class:`Server` and serve :func:`provisioning.app.make_app` of it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from . import store
from .auth import LoginLimiter
from .db import checkpoint, database_url, open_database
from .fleet import ENDED_TOKENS_KEEP_S, Fleet, Settings
from .link import LinkEndpoint
from .relay import Relay
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
    login_attempts: int = 5


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


class Server:
    def __init__(self, options: ServerOptions, engine: AsyncEngine) -> None:
        self.options = options
        self.engine = engine
        self.writer = Writer(engine, options.flush_interval_s)
        self.fleet = Fleet(engine, options.fleet, self.writer)
        self.relay = Relay(self.fleet, options.relay_timeout_s)
        self.links = LinkEndpoint(self.fleet, self.relay, options.hello_timeout_s)
        self.login_limiter = LoginLimiter(options.login_attempts)
        self.enroll_limiter = LoginLimiter(attempts=20, window_s=600.0)
        self.started = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self.gc_pause_max = 0.0
        self.gc_full_collections = 0
        self.loop_lag_max = 0.0
        """Longest delay of the 1 s sweep tick: how late the event loop runs callbacks."""

    @classmethod
    async def open(cls, options: ServerOptions) -> Server:
        options.data_dir.mkdir(parents=True, exist_ok=True)
        engine = await open_database(database_url(options.db, options.data_dir))
        server = cls(options, engine)
        await server.fleet.load()
        return server

    def start(self) -> None:
        self.writer.start()
        self._tasks = [
            asyncio.create_task(self._sweep(), name="provisioning-sweep"),
            asyncio.create_task(self._prune(), name="provisioning-prune"),
            asyncio.create_task(self._checkpoint(), name="provisioning-checkpoint"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
