"""The kits' WebSocket endpoint (``GET /link/v1``): I/O only; messages are parsed and
validated by :mod:`provisioning.protocol`, state lives in :class:`~provisioning.fleet.Fleet`.

A link starts with the kit's ``hello`` (credential, software, applied config, session); the
server answers ``welcome`` or closes with a close code from the protocol module. A kit whose
``hello`` lists the ``ice_servers`` feature, on a server with TURN configured, then gets its
TURN credentials from a task of its link (:meth:`LinkEndpoint._push_ice`; one per link, ended
with it). Any frame that breaks the protocol closes the link with its code and a short reason,
is logged, and leaves the server and every other link untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from .fleet import Fleet, Kit
from .ice import ICE_FEATURE, IceIssuer, KitIce
from .protocol import (
    CLOSE_INTERNAL,
    CLOSE_MALFORMED,
    CLOSE_REVOKED,
    CLOSE_TIMEOUT,
    CLOSE_UNAUTHORIZED,
    CLOSE_VERSION,
    HELLO_TIMEOUT_S,
    MAX_MESSAGE_BYTES,
    VERSION,
    ConfigAck,
    Health,
    Hello,
    IceServers,
    MessageBudget,
    ProtocolError,
    Session,
    Welcome,
    WhepAnswer,
    WhepDeleted,
    encode,
    parse_kit_message,
)
from .relay import Relay

log = logging.getLogger("provisioning.link")


class WsLink:
    """The fleet's handle on one open WebSocket."""

    __slots__ = ("closing", "ws")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.closing = False

    async def send(self, text: str) -> None:
        if self.closing or self.ws.closed:
            raise ConnectionError("link closed")
        await self.ws.send_str(text)

    def close_soon(self, code: int, reason: str) -> None:
        """Send the close frame now; the handler's receive loop then ends."""
        if self.closing:
            return
        self.closing = True
        asyncio.get_running_loop().create_task(self.ws.close(code=code, message=reason.encode()))


async def _read_hello(ws: web.WebSocketResponse, timeout_s: float) -> Hello:
    try:
        frame = await ws.receive(timeout=timeout_s)
    except TimeoutError:
        raise ProtocolError(CLOSE_TIMEOUT, "no hello in time") from None
    if frame.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
        raise ConnectionResetError
    if frame.type != WSMsgType.TEXT:
        raise ProtocolError(CLOSE_MALFORMED, "frames must be JSON text")
    try:
        message = parse_kit_message(frame.data)
    except ProtocolError as exc:
        if '"hello"' in frame.data and '"v"' in frame.data and _wrong_version(frame.data):
            raise ProtocolError(CLOSE_VERSION, f"protocol version {VERSION} expected") from exc
        raise
    if not isinstance(message, Hello):
        raise ProtocolError(CLOSE_MALFORMED, "the first message must be hello")
    if message.v != VERSION:
        raise ProtocolError(CLOSE_VERSION, f"protocol version {VERSION} expected")
    return message


def _wrong_version(data: str) -> bool:
    try:
        value = json.loads(data)
    except ValueError:
        return False
    return isinstance(value, dict) and value.get("v") != VERSION


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

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            max_msg_size=MAX_MESSAGE_BYTES, autoping=True, heartbeat=None, compress=False
        )
        await ws.prepare(request)
        link = WsLink(ws)
        kit: Kit | None = None
        ice_task: asyncio.Task[None] | None = None
        try:
            hello = await _read_hello(ws, self.hello_timeout_s)
            kit = self._authenticate(hello)
            welcome = Welcome(
                kit_id=kit.id,
                name=kit.name,
                health_interval_s=self.fleet.settings.health_interval_s,
                server_time=time.time(),
            )
            await ws.send_str(encode(welcome))
            await self.fleet.attach(kit, link, hello)
            if ICE_FEATURE in hello.features and self.ice.enabled:
                ice_task = asyncio.create_task(self._push_ice(kit, link), name=f"ice-{kit.id}")
            elif ICE_FEATURE in hello.features:  # no TURN here: the kit keeps its own servers,
                # and knows the server takes its network report (docs/protocol.md)
                await ws.send_str(encode(IceServers(ice_servers=[], expires_at=0)))
            await self._receive(ws, kit)
        except ProtocolError as exc:
            self.rejected += 1
            who = kit.id if kit else request.remote
            log.warning("link from %s closed: %s (%d)", who, exc.reason, exc.code)
            link.closing = True
            await ws.close(code=exc.code, message=exc.reason.encode())
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("link handler failed")
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
                    await link.send(encode(self.ice.kit_message(credential)))
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

    def _authenticate(self, hello: Hello) -> Kit:
        kit = self.fleet.authenticate(hello.kit_id, hello.secret)
        if kit is None:
            raise ProtocolError(CLOSE_UNAUTHORIZED, "unknown kit or wrong secret")
        if kit.revoked:
            raise ProtocolError(CLOSE_REVOKED, "this kit's credential has been revoked")
        return kit

    async def _receive(self, ws: web.WebSocketResponse, kit: Kit) -> None:
        budget = self.budget(self.clock())
        async for frame in ws:
            if frame.type == WSMsgType.TEXT:
                budget.spend(len(frame.data), self.clock())
                self._dispatch(kit, parse_kit_message(frame.data))
            elif frame.type == WSMsgType.BINARY:
                raise ProtocolError(CLOSE_MALFORMED, "frames must be JSON text")
            elif frame.type == WSMsgType.ERROR:
                log.warning("link of %s: %s", kit.id, ws.exception())
                return

    def _dispatch(self, kit: Kit, message: Any) -> None:
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
        else:  # a second hello
            raise ProtocolError(CLOSE_MALFORMED, "hello is only the first message")
