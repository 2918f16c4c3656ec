"""The kits' WebSocket endpoint (``GET /link/v1``): the asyncio driver of the server's side of
the link. Every rule (hello first and in time, the welcome, which message may come when, the
message budget, close codes) is :class:`kitlink.ServerConnection`'s; state lives in
:class:`~provisioning.fleet.Fleet`.

A link starts with the kit's ``hello`` (credential, software, applied config, session); the
server answers ``welcome`` or closes with a close code from :mod:`kitlink.rules`. A kit whose
``hello`` lists the ``ice_servers`` feature, on a server with TURN configured, then gets its
TURN credentials from a task of its link (:meth:`LinkEndpoint._push_ice`; one per link, ended
with it). Any frame that breaks the protocol closes the link with its code and a short reason,
is logged, and leaves the server and every other link untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiohttp import WSMsgType, web

from kitlink import (
    CLOSE_INTERNAL,
    CLOSE_REVOKED,
    CLOSE_UNAUTHORIZED,
    FEATURE_CLASS_CONTROL,
    FEATURE_STORED_ACK,
    HELLO_TIMEOUT_S,
    MAX_MESSAGE_BYTES,
    SERVER_FEATURE_CLASSROOM_HEALTH,
    AnyKitMessage,
    AnyServerMessage,
    ConfigAck,
    Health,
    Hello,
    IceServers,
    LocalProtocolError,
    MessageBudget,
    ProtocolError,
    ServerConnection,
    Session,
    Stored,
    Welcome,
    WhepAnswer,
    WhepDeleted,
)

from .fleet import Fleet, Kit, Link
from .ice import ICE_FEATURE, IceIssuer, KitIce
from .relay import Relay

log = logging.getLogger("provisioning.link")

ACK_SEND_TIMEOUT_S = 1.0
"""A kit that does not read its link for this long misses an acknowledgement (it sends those
reports again after its next reconnect, stored once)."""


class WsLink:
    """The fleet's handle on one open WebSocket."""

    __slots__ = ("closing", "conn", "ws")

    def __init__(self, ws: web.WebSocketResponse, conn: ServerConnection) -> None:
        self.ws = ws
        self.conn = conn
        self.closing = False

    async def send(self, message: AnyServerMessage) -> None:
        """Send ``message`` (raises ``ConnectionError`` once the link is closing, and
        :exc:`kitlink.LocalProtocolError` for a message the link may not carry now)."""
        if self.closing or self.ws.closed:
            raise ConnectionError("link closed")
        await self.ws.send_str(self.conn.send(message))

    def close_soon(self, code: int, reason: str) -> None:
        """Send the close frame now; the handler's receive loop then ends."""
        if self.closing:
            return
        self.closing = True
        asyncio.get_running_loop().create_task(self.ws.close(code=code, message=reason.encode()))


class LinkEndpoint:
    def __init__(
        self,
        fleet: Fleet,
        relay: Relay,
        hello_timeout_s: float = HELLO_TIMEOUT_S,
        budget: Callable[[float], MessageBudget] = MessageBudget,
        clock: Callable[[], float] = time.monotonic,
        ice: IceIssuer | None = None,
    ) -> None:
        self.ice = ice if ice is not None else IceIssuer(None)
        self.hello_timeout_s = hello_timeout_s
        self.budget = budget
        self.clock = clock
        self.fleet = fleet
        self.relay = relay
        self.rejected = 0
        self._acks: set[asyncio.Task[None]] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            max_msg_size=MAX_MESSAGE_BYTES, autoping=True, heartbeat=None, compress=False
        )
        await ws.prepare(request)
        conn = ServerConnection(self.clock(), self.hello_timeout_s, self.budget)
        link = WsLink(ws, conn)
        kit: Kit | None = None
        ice_task: asyncio.Task[None] | None = None
        try:
            hello = await self._read_hello(ws, conn)
            await self.fleet.learn_kit(hello.kit_id)  # enrolled on another node just now
            kit = self._authenticate(conn, hello)
            welcome = Welcome(
                kit_id=kit.id,
                name=kit.name,
                health_interval_s=self.fleet.settings.health_interval_s,
                server_time=time.time(),
                # Only to kits that know the field (an older kit refuses it in its welcome).
                features=[SERVER_FEATURE_CLASSROOM_HEALTH]
                if FEATURE_CLASS_CONTROL in hello.features
                else [],
            )
            await ws.send_str(conn.accept(welcome, self.clock()))
            await self.fleet.attach(kit, link, hello)
            if ICE_FEATURE in hello.features and self.ice.enabled:
                ice_task = asyncio.create_task(self._push_ice(kit, link), name=f"ice-{kit.id}")
            elif ICE_FEATURE in hello.features:  # no TURN here: the kit keeps its own servers,
                # and knows the server takes its network report (docs/protocol.md)
                await link.send(IceServers(ice_servers=[], expires_at=0))
            await self._receive(ws, conn, kit)
        except ProtocolError as exc:
            self.rejected += 1
            who = kit.id if kit else request.remote
            log.warning("server link from %s closed: %s (%d)", who, exc.reason, exc.code)
            link.closing = True
            await ws.close(code=exc.code, message=exc.reason.encode())
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("server link handler failed")
            await ws.close(code=CLOSE_INTERNAL, message=b"internal error")
        finally:
            if ice_task is not None:
                ice_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ice_task
            if kit is not None:
                self.fleet.detach(kit, link)
                if kit.link is None:  # not replaced by a newer link of the same kit
                    self.relay.kit_gone(kit)
        return ws

    def acknowledge(self, acks: dict[str, float]) -> None:
        """The writer committed these kits' reports (kit → newest ``sent_at``): tell each kit
        that asked for it (``stored_ack``), from a task per commit, so a kit slow to read never
        holds the writer (docs/protocol.md, "Reports stored")."""
        links = []
        for kit_id, upto in acks.items():
            kit = self.fleet.kits.get(kit_id)
            if kit is not None and kit.link is not None and FEATURE_STORED_ACK in kit.features:
                links.append((kit.link, upto))
        if links:
            task = asyncio.get_running_loop().create_task(self._send_acks(links))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    @staticmethod
    async def _send_acks(links: list[tuple[Link, float]]) -> None:
        for link, upto in links:
            try:
                async with asyncio.timeout(ACK_SEND_TIMEOUT_S):
                    await link.send(Stored(upto=upto))
            except (ConnectionError, RuntimeError, TimeoutError, LocalProtocolError):
                continue  # the link is going: the kit sends those reports again

    async def _read_hello(self, ws: web.WebSocketResponse, conn: ServerConnection) -> Hello:
        deadline = conn.deadline
        assert deadline is not None  # waiting for a hello always has one
        try:
            frame = await ws.receive(timeout=max(0.0, deadline - self.clock()))
        except TimeoutError:
            conn.check_timeout(max(deadline, self.clock()))  # raises
            raise
        if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            raise ConnectionResetError
        if frame.type != WSMsgType.TEXT:
            conn.receive_binary(frame.data)
        conn.receive_text(frame.data, self.clock())
        assert conn.hello is not None  # the core accepts nothing else first
        return conn.hello

    async def _push_ice(self, kit: Kit, link: WsLink) -> None:
        """Send the kit its TURN credentials now, again when a class starts (the fleet sets
        ``kit.ice_wake``) and before they are due for renewal, until the link ends. The set
        itself is :meth:`IceIssuer.kit_credential`'s: an unchanged set is not sent twice on one
        link."""
        wake = asyncio.Event()
        kit.ice_wake = wake
        if kit.ice is None:
            kit.ice = KitIce()
        sent = None
        try:
            while not link.closing:
                wake.clear()  # before reading the kit's state: a class start from here on wakes
                credential = self.ice.kit_credential(kit.ice, kit.id, kit.token)
                if credential != sent:
                    await link.send(self.ice.kit_message(credential))
                    sent = credential
                delay = max(1.0, self.ice.renew_at(credential) - self.ice.clock())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await wake.wait()
        except (ConnectionError, RuntimeError):  # the link closed under the send
            pass
        except Exception:
            log.exception("sending ice_servers to kit %s failed", kit.id)
        finally:
            if kit.ice_wake is wake:
                kit.ice_wake = None

    def _authenticate(self, conn: ServerConnection, hello: Hello) -> Kit:
        kit = self.fleet.authenticate(hello.kit_id, hello.secret)
        if kit is None:
            raise conn.refuse(CLOSE_UNAUTHORIZED, "unknown kit or wrong secret")
        if kit.revoked:
            raise conn.refuse(CLOSE_REVOKED, "this kit's credential has been revoked")
        return kit

    async def _receive(self, ws: web.WebSocketResponse, conn: ServerConnection, kit: Kit) -> None:
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                self._dispatch(kit, conn.receive_text(frame.data, self.clock()))
            elif frame.type == WSMsgType.BINARY:
                conn.receive_binary(frame.data)
            elif frame.type == WSMsgType.ERROR:
                log.warning("server link of %s: %s", kit.id, ws.exception())
                return

    def _dispatch(self, kit: Kit, message: AnyKitMessage) -> None:
        """Hand a kit's message to the fleet or the relay (a second hello never gets here: the
        core closes the link for it)."""
        if isinstance(message, Health):
            self.fleet.health(kit, message)
        elif isinstance(message, ConfigAck):
            self.fleet.config_ack(kit, message)
        elif isinstance(message, Session):
            self.fleet.set_session(kit, message.session)
            if message.session.state == "idle":
                self.relay.kit_idle(kit)
        elif isinstance(message, WhepAnswer | WhepDeleted):
            self.relay.resolve(kit, message)
