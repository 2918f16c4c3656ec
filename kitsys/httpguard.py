"""A connection guard for aiohttp servers: slow or too many connections cannot starve the process.

aiohttp (3.14) has no timeout on reading a request's headers or body and no cap on connections;
its only timer is ``keepalive_timeout`` (default 3,630 s). Measured on the kit before this
guard: 1,100 connections from one LAN host, each sending a partial header then one byte every
10 s, were never closed; the process ran out of file descriptors, ``/healthz`` timed out, the
systemd watchdog went 71 s without a ping and the log grew 97 MB in 90 s (one traceback per
failed ``accept()``). So, for the kit agent and the provisioning server alike (neither imports
the other; both import this):

- **header timeout** — a request's headers must be complete within ``header_timeout_s`` of the
  connection, or of the end of the previous response; a byte now and then does not extend it;
- **keep-alive idle timeout** — a connection that sends nothing for ``idle_timeout_s`` after
  connecting or after a response is closed;
- **body timeout** — :func:`body_timeout_s` bounds the apps' body reader
  (:func:`kitsys.http.read_body`; the guard cannot tell a slow body from a long-lived WebSocket,
  so the reader enforces it);
- **send stall** — a peer that reads nothing while the response waits to be written
  (``pause_writing``) for ``body_timeout_s`` is closed;
- **caps** — at most ``max_per_peer`` connections per address (an IPv6 /64 counts as one) and
  ``max_connections`` in all; over a cap the connection is reset at once (RST, no handler, no
  log line), before aiohttp sees it. ``trusted`` networks (loopback by default: the watchdog's
  probe, the kiosk, a local reverse proxy) are not counted, so an attacker can never take the
  slot the watchdog needs;
- **quiet logs** — what the guard did, and ``accept()`` errors (``EMFILE`` …, which asyncio
  logs with a traceback each), are logged once per ``log_interval_s`` as a count.

The state machine (:class:`GuardCore`) is pure and takes the time as an argument; the asyncio
glue (:class:`GuardedProtocol`, :class:`GuardedSite`) only forwards events and arms one timer
per connection. Use: ``guard = ConnectionGuard(limits)``, ``guard.install(app)`` before
``AppRunner(app).setup()``, then ``await GuardedSite(runner, guard, host, port).start()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aiohttp import web

from .ratelimit import address_key, parse_ip

log = logging.getLogger("kitsys.httpguard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Clock = Callable[[], float]
ACCEPT_ERROR = "socket.accept() out of system resource"
"""The message asyncio's loop gives its exception handler when ``accept()`` fails."""


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 15.0
    max_connections: int = 512
    max_per_peer: int = 32
    trusted: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    log_interval_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_timeout_s", "idle_timeout_s", "log_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0")
        if self.max_connections < 1 or self.max_per_peer < 1:
            raise ValueError("max_connections and max_per_peer must be at least 1")
        for network in self.trusted:
            ipaddress.ip_network(network, strict=False)  # ValueError if not a network


class Phase(Enum):
    IDLE = "idle"
    """Connected, or a response sent; no byte of the next request yet."""
    HEADERS = "headers"
    """Bytes of a request have come, its headers are not complete."""
    BUSY = "busy"
    """A handler runs (the app reads the body, answers, or holds a WebSocket)."""


@dataclass(slots=True, eq=False)
class Connection:
    peer: str
    """The key the per-peer cap counts: an IPv4 address or an IPv6 /64; empty if trusted."""
    since: float
    phase: Phase = Phase.IDLE
    busy: int = 0
    stalled_since: float | None = None


@dataclass(slots=True)
class Tally:
    """What happened since the last summary line."""

    refused: Counter[str] = field(default_factory=Counter)
    timed_out: int = 0
    accept_errors: int = 0
    accept_error: str = ""


class GuardCore:
    """Admission, phases and deadlines of the connections; pure (the time is an argument)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._trusted = [ipaddress.ip_network(n, strict=False) for n in limits.trusted]
        self.per_peer: Counter[str] = Counter()
        self.counted = 0
        """Open connections that count against the caps (trusted peers do not)."""
        self.open = 0
        self.refused_total = 0
        self.timed_out_total = 0
        self.accept_errors_total = 0
        self.tally = Tally()
        self._last_summary: float | None = None

    def peer_key(self, host: str) -> str:
        """``""`` for a trusted peer, else the address (an IPv6 address's /64)."""
        address = parse_ip(host)
        if address is None:
            return ""  # a unix socket: local
        if any(address in network for network in self._trusted):
            return ""
        return address_key(address)

    def admit(self, host: str, now: float) -> Connection | None:
        """A new connection from ``host``: its record, or None if over a cap (close it)."""
        key = self.peer_key(host)
        if key:
            if self.counted >= self.limits.max_connections or (
                self.per_peer[key] >= self.limits.max_per_peer
            ):
                self.refused_total += 1
                self.tally.refused[key] += 1
                return None
            self.per_peer[key] += 1
            self.counted += 1
        self.open += 1
        return Connection(key, now)

    def release(self, conn: Connection) -> None:
        self.open -= 1
        if conn.peer:
            self.counted -= 1
            self.per_peer[conn.peer] -= 1
            if self.per_peer[conn.peer] <= 0:
                del self.per_peer[conn.peer]

    def data(self, conn: Connection) -> bool:
        """Bytes arrived; True if that started a request (the deadline changed)."""
        if conn.phase is Phase.IDLE:
            conn.phase = Phase.HEADERS
            return True
        return False

    def request_started(self, conn: Connection) -> None:
        conn.busy += 1
        conn.phase = Phase.BUSY

    def request_finished(self, conn: Connection, now: float) -> None:
        conn.busy = max(conn.busy - 1, 0)
        if conn.busy == 0:
            conn.phase = Phase.IDLE
            conn.since = now

    def writing_paused(self, conn: Connection, now: float) -> None:
        conn.stalled_since = now

    def writing_resumed(self, conn: Connection) -> None:
        conn.stalled_since = None

    def deadline(self, conn: Connection) -> float | None:
        """When this connection is to be closed unless something changes; None: never."""
        limits = self.limits
        due = None
        if conn.phase is Phase.IDLE:
            due = conn.since + limits.idle_timeout_s
        elif conn.phase is Phase.HEADERS:
            due = conn.since + limits.header_timeout_s
        if conn.stalled_since is not None:
            stall = conn.stalled_since + limits.body_timeout_s
            due = stall if due is None else min(due, stall)
        return due

    def expired(self, conn: Connection, now: float) -> bool:
        due = self.deadline(conn)
        if due is None or now < due:
            return False
        self.timed_out_total += 1
        self.tally.timed_out += 1
        return True

    def accept_failed(self, error: str) -> None:
        self.accept_errors_total += 1
        self.tally.accept_errors += 1
        self.tally.accept_error = error

    def summary(self, now: float) -> str | None:
        """One line for the log at most once per ``log_interval_s``, if anything happened."""
        tally = self.tally
        if not (tally.refused or tally.timed_out or tally.accept_errors):
            return None
        last = self._last_summary
        if last is not None and now - last < self.limits.log_interval_s:
            return None
        self._last_summary = now
        parts = []
        if tally.refused:
            peer, most = tally.refused.most_common(1)[0]
            total = sum(tally.refused.values())
            parts.append(f"refused {total} connections over the caps (most from {peer}: {most})")
        if tally.timed_out:
            parts.append(f"closed {tally.timed_out} slow or idle connections")
        if tally.accept_errors:
            parts.append(f"accept() failed {tally.accept_errors} times ({tally.accept_error})")
        since = "since start" if last is None else f"in the last {now - last:.0f} s"
        self.tally = Tally()
        return f"{'; '.join(parts)} {since} ({self.open} open)"


class ConnectionGuard:
    """The guard of one server: its core, the aiohttp middleware and the protocol factory."""

    def __init__(self, limits: Limits, clock: Clock | None = None) -> None:
        self.limits = limits
        self.core = GuardCore(limits)
        self._clock = clock

    def now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def install(self, app: web.Application) -> None:
        """Put the guard's middleware first in ``app`` (before the runner is set up)."""
        app[GUARD_KEY] = self
        app.middlewares.insert(0, self.middleware)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Headers are complete once a handler runs: the connection is busy until it returns."""
        transport = request.transport
        protocol = transport.get_protocol() if transport is not None else None
        if not isinstance(protocol, GuardedProtocol):
            return await handler(request)
        protocol.request_started()
        try:
            return await handler(request)
        finally:
            protocol.request_finished()

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: GuardedProtocol(self, inner)

    def log_summary(self) -> None:
        line = self.core.summary(self.now())
        if line is not None:
            log.warning("%s", line)


GUARD_KEY = web.AppKey("kitsys.httpguard", ConnectionGuard)


def body_timeout_s(request: web.Request) -> float:
    """How long the app may wait for a request's body (the guard's, or the default)."""
    guard = request.app.get(GUARD_KEY)
    return (guard.limits if guard is not None else Limits()).body_timeout_s


_RESET = struct.pack("ii", 1, 0)
"""``SO_LINGER`` on, 0 s: ``close()`` sends a RST and leaves no TIME_WAIT behind."""


class GuardedProtocol(asyncio.Protocol):
    """Wraps aiohttp's protocol: admits or resets the connection, then forwards every event."""

    def __init__(self, guard: ConnectionGuard, inner: Callable[[], asyncio.Protocol]) -> None:
        self.guard = guard
        self._make_inner = inner
        self.inner: asyncio.Protocol | None = None
        self.conn: Connection | None = None
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else ""
        self.conn = self.guard.core.admit(str(host), self.guard.now())
        if self.conn is None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            transport.abort()
            self.guard.log_summary()
            return
        self.transport = transport
        self.inner = self._make_inner()
        self._arm()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.conn is not None:
            self.guard.core.release(self.conn)
            self.conn = None
        self.transport = None
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn is not None and data and self.guard.core.data(self.conn):
            self._arm()
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.conn is not None:
            self.guard.core.writing_paused(self.conn, self.guard.now())
            self._arm()
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.conn is not None:
            self.guard.core.writing_resumed(self.conn)
            self._arm()
        if self.inner is not None:
            self.inner.resume_writing()

    def request_started(self) -> None:
        if self.conn is not None:
            self.guard.core.request_started(self.conn)
            self._arm()

    def request_finished(self) -> None:
        if self.conn is not None:
            self.guard.core.request_finished(self.conn, self.guard.now())
            self._arm()

    def _arm(self) -> None:
        """One timer per connection, at its deadline (none while a handler runs)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self.guard.core.deadline(self.conn) if self.conn is not None else None
        if due is not None:
            self._timer = asyncio.get_running_loop().call_at(due, self._check)

    def _check(self) -> None:
        self._timer = None
        if self.conn is None or self.transport is None:
            return
        if self.guard.core.expired(self.conn, self.guard.now()):
            self.transport.abort()  # connection_lost follows and releases the slot
            self.guard.log_summary()
        else:
            self._arm()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through ``guard`` (aiohttp's TCPSite, plus the guard)."""

    __slots__ = ("_guard", "_host", "_port", "_reuse_address")

    def __init__(
        self,
        runner: web.BaseRunner,  # type: ignore[type-arg]
        guard: ConnectionGuard,
        host: str | None,
        port: int,
        *,
        backlog: int = 128,
        reuse_address: bool | None = None,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._guard = guard
        self._host = host
        self._port = port
        self._reuse_address = reuse_address

    @property
    def name(self) -> str:
        return f"http://{self._host or '0.0.0.0'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            self._guard.factory(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
        )


LINGERING_S = 2.0
"""After an early answer (408, 413) aiohttp reads and drops the rest of the body before closing;
its default, 10 s, kept each refused slow body's descriptor 10 s longer (measured)."""


def runner_options(limits: Limits) -> dict[str, Any]:
    """Options for ``web.AppRunner``: aiohttp's own keep-alive timer as a backstop, and a short
    lingering time."""
    return {
        "keepalive_timeout": limits.idle_timeout_s + limits.header_timeout_s,
        "lingering_time": LINGERING_S,
    }


def quiet_accept_errors(loop: asyncio.AbstractEventLoop, guard: ConnectionGuard) -> None:
    """``accept()`` errors (``EMFILE`` …) go into the guard's summary line instead of one
    traceback each; every other exception context goes to the handler that was there."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ACCEPT_ERROR:
            error = context.get("exception")
            guard.core.accept_failed(str(error) if error is not None else "unknown")
            guard.log_summary()
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
