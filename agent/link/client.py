"""The kit's side of the link: dial out to the server, report health, take configuration,
answer relayed WHEP requests (docs/protocol.md).

The asyncio driver of :class:`kitlink.KitConnection`: every rule (hello, then the welcome within
``WELCOME_TIMEOUT_S``, which message may come when, the close codes after which the kit stops)
is the core's; this module reads and writes the socket and acts on the server's messages.

The kit always dials (school NAT and firewalls let nothing in). A lost link is redialled with
jittered exponential backoff (``reconnect_min_s`` doubling up to ``reconnect_max_s``, full
jitter so 15,000 kits do not come back in step after a server restart). A refusal that cannot
change by retrying (wrong or revoked credential, unsupported version) stops the dialling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import Close

from kitlink import (
    FEATURE_CLASS_CONTROL,
    FEATURE_ICE_SERVERS,
    FEATURE_NETWORK_CONFIG,
    FEATURE_STORED_ACK,
    MAX_MESSAGE_BYTES,
    SERVER_FEATURE_CLASSROOM_HEALTH,
    VERSION,
    AnyKitMessage,
    AnyServerMessage,
    Health,
    Hello,
    IceServers,
    KitConnection,
    ProtocolError,
    PushConfig,
    Session,
    SessionInfo,
    Stored,
    Welcome,
    WhepAnswer,
    WhepDelete,
    WhepDeleted,
    WhepOffer,
    token_digest,
)

from .. import __version__
from ..config import IceServerConfig, ServerLinkConfig
from ..errors import AgentError, RequestError
from ..session import ClassSession, SessionState
from .apply import PushedConfigs
from .credential import Credential
from .health import HealthCollector
from .reports import Reports

log = logging.getLogger("agent.link")

DEVICE_CHECK_S = 0.5
"""How often the live class's device states are compared with the last report's."""
DEFAULT_HEALTH_INTERVAL_S = 10.0
"""Report interval before the first welcome (afterwards: the server's ``health_interval_s``)."""
NEW_CLASS_STATES = frozenset({"locked", "removed"})
"""Refusals of issue 17, told only to servers that sent a ``pupil_key`` (docs/protocol.md)."""
FEATURES = [FEATURE_ICE_SERVERS, FEATURE_NETWORK_CONFIG, FEATURE_STORED_ACK, FEATURE_CLASS_CONTROL]
"""What this kit understands beyond version 1 (sent in its hello)."""


class Refused(AgentError):
    """The server closed the server link with a refusal: its close ``code`` and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} ({code})")
        self.code = code


def backoff_delay(attempt: int, low: float, high: float, rng: Callable[[], float]) -> float:
    """Full jitter: uniform in [low/2, min(high, low·2^attempt)]."""
    ceiling = min(high, low * (2 ** min(attempt, 30)))
    return float(max(low / 2, ceiling * rng()))


def session_info(session: ClassSession) -> SessionInfo:
    """Live once the class is, or already while a class resumed after a crash is starting."""
    if session.state in (SessionState.LIVE, SessionState.STARTING) and session.token:
        return SessionInfo(state="live", token_sha256=token_digest(session.token))
    return SessionInfo(state="idle")


class LinkClient:
    def __init__(
        self,
        credential: Credential,
        session: ClassSession,
        configs: PushedConfigs,
        collector: HealthCollector,
        options: ServerLinkConfig,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.credential = credential
        self.session = session
        self.configs = configs
        self.collector = collector
        self.options = options
        self.rng = rng
        self.clock = clock
        """The link's rules' clock (the welcome timeout); asyncio's loop clock by default."""
        self.state = "connecting"
        """``connecting``, ``connected``, ``waiting`` (backoff) or ``refused`` (stopped)."""
        self.refusal = ""
        self.connects = 0
        self._outbox: asyncio.Queue[AnyKitMessage] = asyncio.Queue()
        self._connected = asyncio.Event()
        self._ws: ClientConnection | None = None
        """The link, once welcomed; None while it is down."""
        self._conn: KitConnection | None = None
        """Its rules (:class:`kitlink.KitConnection`), set with ``_ws``."""
        self.health_interval_s = DEFAULT_HEALTH_INTERVAL_S
        self.reports = Reports()
        """Reports made while the link was down, and those sent but not yet stored."""
        self._seq = 0
        self._report_now = asyncio.Event()
        self._reporter: asyncio.Task[None] | None = None
        self._clock_skew = 0.0
        """The server's wall clock minus the kit's, at the last welcome."""
        session.listeners.append(self._session_changed)

    async def run(self) -> None:
        self._ensure_reporter()
        try:
            await self._dial_forever()
        finally:
            if self._reporter is not None:
                self._reporter.cancel()
                await asyncio.gather(self._reporter, return_exceptions=True)

    def _ensure_reporter(self) -> None:
        """The health task runs for the client's whole life, linked or not (restarted at the
        next welcome should it ever have ended)."""
        if self._reporter is None or self._reporter.done():
            self._reporter = asyncio.create_task(self._report_forever(), name="server-link-health")

    async def _dial_forever(self) -> None:
        attempt = 0
        while True:
            self.state = "connecting"
            try:
                async with connect(
                    self.credential.link_url,
                    max_size=MAX_MESSAGE_BYTES,
                    open_timeout=20,
                    ping_interval=self.options.keepalive_s,
                    ping_timeout=self.options.keepalive_s,
                    close_timeout=5,
                    compression=None,
                    user_agent_header=f"kit-agent/{__version__}",
                    proxy=self.options.proxy or None,
                ) as ws:
                    attempt = 0
                    await self._serve(ws)
            except Refused as exc:
                self.state, self.refusal = "refused", str(exc)
                log.error("the server refused this kit: %s; not reconnecting", exc)
                return
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                log.info("cannot reach the server: %s", exc or type(exc).__name__)
            except ConnectionClosed as exc:
                log.info("server link closed: %s", exc)
            except ProtocolError as exc:
                log.warning("the server broke the protocol: %s", exc.reason)
            finally:
                self._connected.clear()
                self._ws = self._conn = None
                self.reports.link_lost()
            self.state = "waiting"
            delay = backoff_delay(
                attempt, self.options.reconnect_min_s, self.options.reconnect_max_s, self.rng
            )
            attempt += 1
            await asyncio.sleep(delay)

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def _serve(self, ws: ClientConnection) -> None:
        self._outbox = asyncio.Queue()  # the hello below carries the current state
        hello = Hello(
            v=VERSION,
            kit_id=self.credential.kit_id,
            secret=self.credential.secret,
            software=__version__,
            config_version=self.configs.version,
            session=session_info(self.session),
            features=FEATURES,
        )
        # The report's ``network`` only once the server has sent ``ice_servers`` on this link:
        # a server from before it would refuse the field (and close the link).
        self.collector.network = False
        conn = KitConnection(self.clock())
        await ws.send(conn.hello(hello, self.clock()))
        welcome = await self._read_welcome(ws, conn)
        self.connects += 1
        self.state = "connected"
        log.info("server link up: %s as %s", self.credential.server, welcome.kit_id)
        self.health_interval_s = welcome.health_interval_s
        self._clock_skew = welcome.server_time - time.time()
        # The class's admission counts only to a server that said it takes them.
        self.collector.classroom = SERVER_FEATURE_CLASSROOM_HEALTH in welcome.features
        self.session.network.want_probe()  # what gets out may have changed with the link
        await self._send_backlog(ws, conn)
        self._ws, self._conn = ws, conn
        self._connected.set()
        self._report_now.set()  # the current state, at once
        self._ensure_reporter()
        tasks = [asyncio.create_task(self._send_outbox(ws, conn))]
        try:
            await self._receive(ws, conn)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read_welcome(self, ws: ClientConnection, conn: KitConnection) -> Welcome:
        """The server's first frame, which the rules want to be a welcome, in time."""
        deadline = conn.deadline
        assert deadline is not None  # waiting for the welcome always has one
        async with self._closing_on_error(ws, conn):
            try:
                async with asyncio.timeout(max(0.0, deadline - self.clock())):
                    frame = await ws.recv()
            except TimeoutError:
                conn.check_timeout(max(deadline, self.clock()))  # raises
                raise
            self._receive_frame(conn, frame)
        assert conn.welcome is not None  # the rules accept nothing else first
        return conn.welcome

    @contextlib.asynccontextmanager
    async def _closing_on_error(
        self, ws: ClientConnection, conn: KitConnection
    ) -> AsyncIterator[None]:
        """Close the link with the code of a broken rule; a refusal after which the rules say
        not to redial becomes :exc:`Refused`."""
        try:
            yield
        except ProtocolError as exc:
            await ws.close(exc.code, exc.reason)
            raise
        except ConnectionClosed as exc:
            self._raise_if_final(conn, exc.rcvd)
            raise

    def _raise_if_final(self, conn: KitConnection, rcvd: Close | None) -> None:
        if rcvd is None:
            return
        closed = conn.receive_close(rcvd.code, rcvd.reason)
        if closed.final:
            raise Refused(closed.code, closed.reason)

    def _receive_frame(self, conn: KitConnection, frame: str | bytes) -> AnyServerMessage:
        if isinstance(frame, bytes):
            conn.receive_binary(frame)
        return conn.receive_text(frame, self.clock())

    async def _receive(self, ws: ClientConnection, conn: KitConnection) -> None:
        async with self._closing_on_error(ws, conn):
            async for frame in ws:
                self._dispatch(self._receive_frame(conn, frame))
        self._raise_if_final(conn, ws.protocol.close_rcvd)

    def _dispatch(self, message: AnyServerMessage) -> None:
        """Act on one of the server's messages (a second welcome never gets here: the rules
        close the link for it)."""
        if isinstance(message, PushConfig):
            self._outbox.put_nowait(self.configs.offer(message))
        elif isinstance(message, WhepOffer):
            asyncio.get_running_loop().create_task(self._whep_offer(message))
        elif isinstance(message, WhepDelete):
            asyncio.get_running_loop().create_task(self._whep_delete(message))
        elif isinstance(message, IceServers):
            self._ice_servers(message)
        elif isinstance(message, Stored):
            self.reports.stored(message.upto)

    def _ice_servers(self, message: IceServers) -> None:
        """The server's STUN/TURN servers for this kit: they replace the previous ones until
        ``expires_at`` (the server's clock, corrected by the skew seen at welcome); kept in
        memory only, and logged without their credentials."""
        servers = []
        for given in message.ice_servers:
            try:
                servers.append(IceServerConfig.model_validate(given.model_dump()))
            except ValidationError:
                log.warning("an ICE server from the server is not a stun:/turn: URL: left out")
        valid_for = message.expires_at - (time.time() + self._clock_skew)
        self.collector.network = True
        if servers and valid_for <= 0:
            log.warning("the server's ICE servers have already expired: not used")
        else:
            urls = [url.split("?")[0] for s in servers for url in s.urls]
            log.info("ICE servers from the server: %s", ", ".join(urls) or "none")
        self.session.network.set_given(servers, valid_for)

    # -- health: made every interval whether linked or not, queued while the link is down ------

    async def _report_forever(self) -> None:
        while True:
            devices = self.collector.device_states()
            try:
                report = self.collector.report()
            except Exception:  # a bug in a probe must not end the reports
                log.exception("could not make the health report")
                await self._wait_next_report(devices)
                continue
            health = Health(seq=self._seq, sent_at=time.time(), report=report)
            self._seq += 1
            ws, conn = self._ws, self._conn
            try:
                if ws is None or conn is None:
                    raise ConnectionError("link down")
                await ws.send(conn.send(health))
                self.reports.sent(health)
            except (ConnectionError, ConnectionClosed):
                self.reports.made_offline(health)
            await self._wait_next_report(devices)

    async def _send_backlog(self, ws: ClientConnection, conn: KitConnection) -> None:
        """Send what was queued while the link was down (and what the last link never
        acknowledged), oldest first, each marked ``queued`` with the time it was made; the
        first carries the count of reports dropped (agent/link/reports.py)."""
        if not self.reports.backlog and not self.reports.dropped:
            return
        log.info(
            "sending %d health report(s) queued while the link was down (%d dropped)",
            len(self.reports.backlog),
            self.reports.dropped,
        )
        for health in self.reports.to_send():
            await ws.send(conn.send(health))

    async def _wait_next_report(self, devices: tuple[tuple[str, str, str], ...] | None) -> None:
        """Sleep the health interval, or less if a device of the live class changed state
        (checked every ``DEVICE_CHECK_S``: the server hears of an unplugged camera within a
        second) or the link has just come up."""
        self._report_now.clear()
        waited = 0.0
        while waited < self.health_interval_s:
            step = min(DEVICE_CHECK_S, self.health_interval_s - waited)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(step):
                    await self._report_now.wait()
                return
            waited += step
            if self.collector.device_states() != devices:
                return

    async def _send_outbox(self, ws: ClientConnection, conn: KitConnection) -> None:
        while True:
            message = await self._outbox.get()
            await ws.send(conn.send(message))

    def _session_changed(self, session: ClassSession) -> None:
        self._outbox.put_nowait(Session(session=session_info(session)))
        ack = self.configs.session_changed()
        if ack is not None:
            self._outbox.put_nowait(ack)

    # -- relayed WHEP --------------------------------------------------------------------------

    async def _whep_offer(self, offer: WhepOffer) -> None:
        try:
            viewer, answer = await self.session.add_viewer(
                offer.token, offer.sdp.encode(), key=offer.pupil_key
            )
            reply = WhepAnswer(req=offer.req, status=201, resource=viewer.id, sdp=answer)
        except RequestError as exc:
            state = exc.class_state
            if state in NEW_CLASS_STATES and offer.pupil_key is None:
                state = None  # a server that sent no key may not know them (kitlink ClassState)
            reply = WhepAnswer(
                req=offer.req,
                status=exc.status,
                error=exc.public_message,
                class_state=state,  # type: ignore[arg-type]
            )
        except Exception:
            log.exception("relayed WHEP offer failed")
            reply = WhepAnswer(req=offer.req, status=500, error="internal error")
        self._outbox.put_nowait(reply)

    async def _whep_delete(self, delete: WhepDelete) -> None:
        try:
            await self.session.remove_viewer(delete.resource)
            reply = WhepDeleted(req=delete.req, status=200)
        except RequestError as exc:
            reply = WhepDeleted(req=delete.req, status=exc.status, error=exc.public_message)
        self._outbox.put_nowait(reply)

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.session.listeners.remove(self._session_changed)
