"""Which way out of the school works: the kit's ICE servers, probed, ordered, reported.

The kit has two sources of STUN/TURN servers: its own configuration (``webrtc.ice_servers``, a
LAN-only kit's) and the server's ``ice_servers`` message (TURN credentials minted for this kit,
replaced as a whole by each new message and dropped at their ``expires_at``; held in memory
only, never written to disk, never logged). :class:`IceServerSet` uses the server's while it has
some, else the configured ones, and remembers the last probe of each endpoint; :func:`decide`
(pure) turns the probes into

- the school's ``reach`` (``udp``, ``turn-udp``, ``turn-tcp``, ``turn-tls``, ``none``,
  ``unknown``), sent in the health report and shown on the kiosk;
- the ICE configuration the kit's next peer connections use. aiortc 1.16 uses only the first
  STUN URL and the first TURN URL it is given (``rtcicetransport.connection_kwargs``), and a
  pupil's join waits for the kit's candidate gathering: an unreachable TURN server added 5 s to
  every join (measured, issue 12). So the first TURN URL is one whose allocation worked
  (UDP before TCP before TLS: the cheapest that gets out), a STUN URL is kept only if a STUN
  binding got an answer, and nothing known to fail is left in.

:class:`NetworkMonitor` is the thin driver: it probes at start-up, whenever the servers change
(a new ``ice_servers``, a pushed config, an expiry), when asked (a link welcome) and every
``probe_interval_s``; each probe is bounded by ``probe_timeout_s`` and all run concurrently.

No join gets the unprobed configuration while a monitor runs: a change of the servers keeps
what is known of the same host/port/transport (a credential renewal changes nothing about what
gets out), restarts the probe at once, and a join made while something new is pending waits
until the decision is settled, a few round trips (:func:`presumed_failed`). In a school that
lets out only TCP 80/443, a pupil joining at class start got STUN and TURN over UDP first, the
kit's gathering waited 5 s for them and found no relay candidate: the pupil never connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aioice import stun, turn
from aiortc import RTCConfiguration, rtcicetransport

from kitlink import NetworkHealth

from ..config import IceServerConfig
from .ice import rtc_configuration

log = logging.getLogger("agent.network")

Transport = Literal["udp", "tcp", "tls"]
Reach = Literal["unknown", "udp", "turn-udp", "turn-tcp", "turn-tls", "none"]
Key = tuple[str, str, int, str]
"""What a probe tests (:attr:`Endpoint.key`): kind, host, port, transport; no credentials."""
TRANSPORT_ORDER: tuple[Transport, ...] = ("udp", "tcp", "tls")
STUN_RETRANSMIT_S = (0.0, 0.25, 0.75, 1.75)
"""When a STUN binding request is (re)sent within its probe's timeout (UDP may lose one)."""
TURN_LIFETIME_S = 60
"""Lifetime asked for a probe's allocation (deleted at once anyway)."""


@dataclass(frozen=True)
class Endpoint:
    """One STUN or TURN URL. ``username``/``credential`` are never part of a log line."""

    kind: Literal["stun", "turn"]
    host: str
    port: int
    transport: Transport
    url: str
    username: str = field(default="", repr=False)
    credential: str = field(default="", repr=False)

    @property
    def key(self) -> Key:
        """What a probe tests: a STUN binding to host:port, or a TURN allocation over one
        transport."""
        return (self.kind, self.host, self.port, self.transport)


def endpoints(servers: Iterable[IceServerConfig]) -> list[Endpoint]:
    """Every usable URL of ``servers`` in order (one aiortc cannot use is left out, logged)."""
    out: list[Endpoint] = []
    for server in servers:
        for url in server.urls:
            try:
                parsed = rtcicetransport.parse_stun_turn_uri(url)
            except ValueError as exc:
                log.warning("ICE server %s left out: %s", url.split("?")[0], exc)
                continue
            scheme = parsed["scheme"]
            if scheme == "stun":
                out.append(Endpoint("stun", parsed["host"], parsed["port"], "udp", url))
            elif scheme in ("turn", "turns") and parsed.get("transport") in ("udp", "tcp"):
                tls = scheme == "turns"
                if tls and parsed["transport"] != "tcp":
                    continue
                transport: Transport = "tls" if tls else parsed["transport"]
                out.append(
                    Endpoint(
                        "turn",
                        parsed["host"],
                        parsed["port"],
                        transport,
                        url,
                        server.username,
                        server.credential,
                    )
                )
            else:
                log.warning("ICE server %s left out: aiortc cannot use it", url.split("?")[0])
    return out


def probes(points: Sequence[Endpoint]) -> list[Endpoint]:
    """What to test: a STUN binding to each UDP host:port (STUN URLs, and TURN/UDP servers,
    which answer bindings too), and a TURN allocation per TURN URL; each once."""
    wanted: dict[Key, Endpoint] = {}
    for point in points:
        if point.transport == "udp":
            binding = Endpoint(
                "stun", point.host, point.port, "udp", f"stun:{point.host}:{point.port}"
            )
            wanted.setdefault(binding.key, binding)
    for point in points:
        if point.kind == "turn":
            wanted.setdefault(point.key, point)
    return list(wanted.values())


@dataclass(frozen=True)
class Decision:
    reach: Reach
    turn_error: str
    servers: tuple[IceServerConfig, ...]
    """What the kit's next peer connections use, in aiortc's order of preference."""
    settled: bool = True
    """False while a probe still running could change ``servers`` (a join waits for it)."""


Status = Literal["ok", "failed", "pending"]


def presumed_failed(
    tested: Sequence[Endpoint], known: Mapping[Key, str], pending: Iterable[Key]
) -> set[Key]:
    """The pending UDP probes to treat as failed for now: once a TURN allocation over TCP or
    TLS has worked and no UDP probe has had an answer. That allocation took at least three
    round trips (TCP handshake, the 401 challenge, the authenticated Allocate), a STUN binding
    takes one: a UDP answer still missing is a firewall dropping it, and waiting for its
    timeout (``probe_timeout_s``) would hold every join made meanwhile (issue 12: a school that
    lets out only TCP 80/443). Wrong only if a UDP packet was lost; then the joins made before
    the probe ends use TURN over TCP, which works, and the next ones get UDP."""
    udp = [p for p in tested if p.transport == "udp"]
    if any(known.get(p.key) == "" for p in udp):
        return set()
    if not any(known.get(p.key) == "" for p in tested if p.transport != "udp"):
        return set()
    waiting = set(pending)
    return {p.key for p in udp if p.key in waiting and p.key not in known}


def decide(
    points: Sequence[Endpoint],
    outcomes: Mapping[Key, str] | None,
    pending: Iterable[Key] = (),
) -> Decision:
    """The reach and ICE configuration for ``points`` given each probe's outcome (``""``: it
    worked, else why not; missing: failed); ``pending``: probes still running (their outcome
    unknown yet, see :func:`presumed_failed`). ``outcomes`` None and nothing pending: not
    probed at all (no monitor: everything kept, TURN by transport)."""
    waiting = set(pending)
    if not points:
        return Decision("unknown", "", ())
    turns = sorted(
        (p for p in points if p.kind == "turn"), key=lambda p: TRANSPORT_ORDER.index(p.transport)
    )
    if outcomes is None and not waiting:
        stuns = [p for p in points if p.kind == "stun"]
        return Decision("unknown", "", tuple(_server(p) for p in (*stuns[:1], *turns)))
    known = dict(outcomes or {})
    tested = probes(points)
    presumed = presumed_failed(tested, known, waiting)

    def status(point: Endpoint) -> Status:
        if point.key in known:
            return "ok" if known[point.key] == "" else "failed"
        return "pending" if point.key in waiting and point.key not in presumed else "failed"

    stun_keys = {p.key for p in points if p.kind == "stun"}
    bindings = sorted(  # a STUN URL as configured before a binding to a TURN server
        (p for p in tested if p.kind == "stun"), key=lambda p: p.key not in stun_keys
    )
    bound = [p for p in bindings if status(p) == "ok"]
    settled = bool(bound) or all(status(p) == "failed" for p in bindings)
    for point in turns:  # aiortc uses the first TURN URL: decided once the first that works is
        if status(point) != "failed":
            settled = settled and status(point) == "ok"
            break
    working = [p for p in turns if status(p) == "ok"]
    chosen = tuple(_server(p) for p in (*bound[:1], *working))
    if not settled:
        return Decision("unknown", "", chosen, settled=False)
    reach: Reach
    if bound:
        reach = "udp"
    elif working:
        reach = "turn-" + working[0].transport  # type: ignore[assignment]
    else:
        reach = "none"
    turn_error = "" if working or not turns else _turn_errors(turns, known)
    return Decision(reach, turn_error, chosen)


def _server(point: Endpoint) -> IceServerConfig:
    if point.kind == "stun":
        return IceServerConfig(urls=[point.url])
    return IceServerConfig(urls=[point.url], username=point.username, credential=point.credential)


def _turn_errors(turns: Sequence[Endpoint], outcomes: Mapping[Key, str]) -> str:
    """``udp: timeout; tcp: refused; tls: TLS (certificate verify failed)`` (one per transport)."""
    seen: dict[str, str] = {}
    for point in turns:
        seen.setdefault(point.transport, outcomes.get(point.key) or "not probed")
    return "; ".join(f"{t}: {why}" for t, why in seen.items())[:200]


class IceServerSet:
    """The kit's ICE servers (configured + given by the server) and their last probe.

    Pure but for :meth:`wait_settled`: the monotonic and wall clocks are injected;
    :class:`NetworkMonitor` does the I/O and records each outcome as it comes.

    A change of the servers keeps the outcomes of what is still there (same host, port and
    transport): the server renews the kit's credentials at each class start and before they
    expire, and a renewal changes nothing about what gets out of the school. Only outcomes that
    depend on the credential (401, 403…) are forgotten. So a join never goes back to the
    unprobed configuration, whose TURN over UDP first cost 5 s and the relay itself in a school
    without UDP (issue 12). What is new stays *pending* until its probe answers (see
    :func:`decide`; only while a monitor is attached: without one nothing is probed)."""

    def __init__(
        self,
        configured: Sequence[IceServerConfig],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self._configured = tuple(configured)
        self._given: tuple[IceServerConfig, ...] = ()
        self._given_until: float | None = None
        self.generation = 0
        """Bumped at every change of the servers: a probe of an older set is not recorded."""
        self._outcomes: dict[Key, str] | None = None
        self._pending: set[Key] = set()
        self._monitored = False
        self._waiters: list[asyncio.Future[None]] = []
        self._logged: dict[Key, str] = {}
        self.probed_at = 0.0
        self.on_change: Callable[[], None] = lambda: None

    def attach(self, kick: Callable[[], None]) -> None:
        """A monitor probes these servers from now on (``kick``: probe now)."""
        self.on_change = kick
        self._monitored = True
        self._pending = self._unknown()

    def set_configured(self, servers: Sequence[IceServerConfig]) -> None:
        if tuple(servers) != self._configured:
            self._configured = tuple(servers)
            self._changed()

    def set_given(self, servers: Sequence[IceServerConfig], valid_for_s: float) -> None:
        """The server's servers, replacing the previous ones, usable ``valid_for_s`` more."""
        given = tuple(servers) if valid_for_s > 0 else ()
        until = self.clock() + valid_for_s if given else None
        changed = given != self._given
        self._given, self._given_until = given, until
        if changed:
            self._changed()

    def expires_in(self) -> float | None:
        """Seconds until the server's servers expire (None: none held)."""
        return None if self._given_until is None else self._given_until - self.clock()

    def want_probe(self) -> None:
        """Ask for a probe now (e.g. the server link has just come up)."""
        self.on_change()

    def _expire(self) -> None:
        if self._given_until is not None and self.clock() >= self._given_until:
            log.info("the server's ICE servers have expired; waiting for new ones")
            self._given, self._given_until = (), None
            self._changed()

    def _current(self) -> list[Endpoint]:
        return endpoints(self._given or self._configured)

    def _unknown(self) -> set[Key]:
        known = self._outcomes or {}
        return {p.key for p in probes(self._current()) if p.key not in known}

    def _changed(self) -> None:
        self.generation += 1
        if self._outcomes is not None:
            still = {p.key for p in probes(self._current())}
            self._outcomes = {
                key: outcome
                for key, outcome in self._outcomes.items()
                if key in still and not outcome.startswith(CREDENTIAL_FAILURES)
            }
        self._pending = self._unknown() if self._monitored else set()
        self.on_change()
        self._progress()

    def endpoints(self) -> list[Endpoint]:
        """The server's servers while it has given some (they replace the kit's own, as
        docs/protocol.md says), else the configured ones (a LAN-only kit, or none given)."""
        self._expire()
        return self._current()

    def record(
        self, generation: int, outcomes: Mapping[Key, str], complete: bool = True
    ) -> list[str]:
        """Keep probe outcomes (unless the servers changed meanwhile): one as it comes
        (``complete`` False), or a whole probe's, which also ends what is pending. Returns the
        lines worth logging: only endpoints whose outcome differs from the last one logged."""
        if generation != self.generation:
            return []
        self._outcomes = {**(self._outcomes or {}), **outcomes}
        self._pending -= set(outcomes)
        if complete:
            self._pending.clear()
            self.probed_at = self.wall()
        lines = []
        for point in probes(self.endpoints()):
            if point.key not in outcomes:
                continue
            outcome = outcomes[point.key]
            if self._logged.get(point.key, "") == outcome:
                continue
            what = "TURN allocation" if point.kind == "turn" else "STUN binding"
            where = f"{point.host}:{point.port} over {point.transport}"
            lines.append(f"{what} to {where}: " + (f"failed ({outcome})" if outcome else "works"))
            self._logged[point.key] = outcome
        self._progress()
        return lines

    def probe_ended(self, generation: int) -> None:
        """A probe of ``generation`` is over, finished or not: nothing of it is pending."""
        if generation == self.generation and self._pending:
            self._pending.clear()
            self._progress()

    def decision(self) -> Decision:
        return decide(self.endpoints(), self._outcomes, self._pending)

    async def wait_settled(self, timeout_s: float) -> float:
        """Wait (at most ``timeout_s``) until no running probe can change the decision; returns
        the seconds waited. Only the first probe of new servers makes a join wait, and only a
        few round trips (see :func:`presumed_failed`) unless nothing answers at all."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not self.decision().settled:
                    waiter = loop.create_future()
                    self._waiters.append(waiter)
                    try:
                        await waiter
                    finally:
                        with contextlib.suppress(ValueError):
                            self._waiters.remove(waiter)
        return loop.time() - started

    def _progress(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def rtc_configuration(self) -> RTCConfiguration:
        return rtc_configuration(self.decision().servers)

    def health(self, paths: Mapping[str, int]) -> NetworkHealth:
        decision = self.decision()
        return NetworkHealth(
            reach=decision.reach,
            turn_error=decision.turn_error,
            probed_at=round(self.probed_at, 3),
            paths=dict(paths),
        )


# -- the I/O: one probe per endpoint ------------------------------------------------------------


class _BindingProtocol(asyncio.DatagramProtocol):
    def __init__(self, transaction_id: bytes) -> None:
        self.transaction_id = transaction_id
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        with contextlib.suppress(ValueError):
            message = stun.parse_message(data)
            if message.transaction_id == self.transaction_id and not self.answered.done():
                self.answered.set_result(None)

    def error_received(self, exc: Exception) -> None:
        if not self.answered.done():
            self.answered.set_exception(exc)


async def stun_binding(host: str, port: int) -> None:
    """One STUN binding request over UDP, resent a few times, until an answer (bound by the
    caller's timeout). Raises OSError (e.g. refused: an ICMP port unreachable came back)."""
    loop = asyncio.get_running_loop()
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _BindingProtocol(request.transaction_id), remote_addr=(host, port)
    )
    try:
        started = loop.time()
        for at in STUN_RETRANSMIT_S:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(started + at):
                    await asyncio.shield(protocol.answered)
                    return
            transport.sendto(bytes(request))
        await protocol.answered
    finally:
        transport.close()


async def turn_allocation(point: Endpoint) -> None:
    """Allocate a relay on ``point`` with its credentials (aioice's client, as aiortc's
    peer connections will), then delete it."""
    loop = asyncio.get_running_loop()
    server = (point.host, point.port)
    protocol: turn.TurnClientProtocol
    options: dict[str, Any] = {
        "username": point.username,
        "password": point.credential,
        "lifetime": TURN_LIFETIME_S,
        "channel_refresh_time": turn.DEFAULT_CHANNEL_REFRESH_TIME,
    }
    if point.transport == "udp":
        _, protocol = await loop.create_datagram_endpoint(
            lambda: turn.TurnClientUdpProtocol(server, **options), remote_addr=server
        )
    else:
        context = ssl.create_default_context() if point.transport == "tls" else None
        _, protocol = await loop.create_connection(
            lambda: turn.TurnClientTcpProtocol(server, **options),
            host=point.host,
            port=point.port,
            ssl=context,
        )
    try:
        await protocol.connect()
    except BaseException:
        protocol.transport.close()
        raise
    # Deleted in the background (lifetime 0: the server frees the relay now), so that a slow
    # answer to the deletion does not turn a working allocation into a timeout.
    task = asyncio.create_task(_delete(protocol))
    _DELETIONS.add(task)
    task.add_done_callback(_DELETIONS.discard)


_DELETIONS: set[asyncio.Task[None]] = set()


async def _delete(protocol: turn.TurnClientProtocol) -> None:
    try:
        async with asyncio.timeout(2.0):
            await protocol.delete()
    except Exception:  # the allocation expires by itself after TURN_LIFETIME_S
        pass
    finally:
        protocol.transport.close()


CREDENTIAL_FAILURES = ("bad credential", "forbidden", "refused by the server")
"""Outcomes (:func:`describe_failure`) that depend on the credential, not on the network."""


def describe_failure(exc: BaseException) -> str:
    """Why a probe failed, in a few words for logs, health and the admin (no secrets)."""
    if isinstance(exc, stun.TransactionFailed):
        code = exc.response.error_code
        if code == 401:
            return "bad credential (401)"
        if code == 403:
            return "forbidden (403)"
        return f"refused by the server ({code})"
    if isinstance(exc, TimeoutError | stun.TransactionTimeout):
        return "timeout"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS ({exc.verify_message or 'certificate'})"[:80]
    if isinstance(exc, ssl.SSLError):
        return f"TLS ({exc.reason or 'handshake failed'})"[:80]
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    if isinstance(exc, OSError):
        return f"unreachable ({exc.strerror or type(exc).__name__})"[:80]
    if isinstance(exc, ConnectionError):
        return "connection lost"
    return type(exc).__name__


Prober = Callable[[Endpoint], Awaitable[None]]


async def probe(point: Endpoint) -> None:
    if point.kind == "stun":
        await stun_binding(point.host, point.port)
    else:
        await turn_allocation(point)


async def probe_all(
    points: Sequence[Endpoint],
    timeout_s: float,
    prober: Prober = probe,
    on_result: Callable[[Key, str], None] | None = None,
) -> dict[Key, str]:
    """Every probe of ``points`` at once, each bounded by ``timeout_s``: key → "" or why not
    (also given to ``on_result`` as each one ends)."""

    async def one(point: Endpoint) -> str:
        try:
            async with asyncio.timeout(timeout_s):
                await prober(point)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            outcome = describe_failure(exc)
        else:
            outcome = ""
        if on_result is not None:
            on_result(point.key, outcome)
        return outcome

    tested = probes(points)
    results = await asyncio.gather(*(one(p) for p in tested))
    return {p.key: outcome for p, outcome in zip(tested, results, strict=True)}


class NetworkMonitor:
    """Probes the :class:`IceServerSet` when it changes, when asked, and periodically.

    A change of the servers during a probe cancels it and starts the probe of the new ones at
    once (a probe of servers no longer used is worth nothing: waiting for its UDP timeouts
    delayed the kit's first usable decision by 6 s after a class start, issue 12); each outcome
    is recorded as it arrives, so joins wait only for what matters (:meth:`IceServerSet.
    wait_settled`)."""

    def __init__(
        self,
        servers: IceServerSet,
        interval_s: float,
        timeout_s: float,
        prober: Prober = probe,
    ) -> None:
        self.servers = servers
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.prober = prober
        self._wake = asyncio.Event()
        self.probes = 0
        self._reach: Reach = "unknown"
        self._probing: asyncio.Task[Decision] | None = None
        self._probing_generation = -1
        servers.attach(self.kick)

    def kick(self) -> None:
        """Probe again now (the servers changed, or the link has just come up)."""
        self._wake.set()
        if self._probing is not None and self._probing_generation != self.servers.generation:
            self._probing.cancel()  # of servers no longer used

    async def run(self) -> None:
        while True:
            self.servers.endpoints()  # drops expired servers first: their change kicks
            self._wake.clear()
            self._probing_generation = self.servers.generation
            task = asyncio.create_task(self.probe_once())
            self._probing = task
            try:
                await asyncio.wait({task})
            finally:
                self._probing = None
                task.cancel()  # if run() itself is cancelled
            if task.cancelled():
                continue  # the servers changed: probe the new ones now
            if task.exception() is not None:  # a bug here must not end the probing
                log.error("network probe failed", exc_info=task.exception())
            wait = self.interval_s
            expires_in = self.servers.expires_in()
            if expires_in is not None:
                wait = max(0.0, min(wait, expires_in))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def probe_once(self) -> Decision:
        points = self.servers.endpoints()  # first: it drops expired servers (a new generation)
        generation = self._probing_generation = self.servers.generation

        def arrived(key: Key, outcome: str) -> None:
            self._log(self.servers.record(generation, {key: outcome}, complete=False))

        try:
            outcomes = await probe_all(points, self.timeout_s, self.prober, arrived)
            self.probes += 1
            self._log(self.servers.record(generation, outcomes))
        finally:
            self.servers.probe_ended(generation)
        return self.servers.decision()

    def _log(self, lines: list[str]) -> None:
        for line in lines:
            (log.info if line.endswith("works") else log.warning)("%s", line)
        decision = self.servers.decision()
        if decision.settled and decision.reach != self._reach:
            self._reach = decision.reach
            log.info("network: reach %s", decision.reach)
