"""The kit's side of the link: dial out to the server, report health, take configuration,
answer relayed WHEP requests (docs/protocol.md).

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
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from provisioning.protocol import (
    FINAL_CLOSE_CODES,
    MAX_MESSAGE_BYTES,
    VERSION,
    Health,
    Hello,
    ProtocolError,
    PushConfig,
    Session,
    SessionInfo,
    Welcome,
    WhepAnswer,
    WhepDelete,
    WhepDeleted,
    WhepOffer,
    encode,
    parse_server_message,
    token_digest,
)

from .. import __version__
from ..config import ServerLinkConfig
from ..errors import RequestError
from ..session import ClassSession, SessionState
from .apply import PushedConfigs
from .credential import Credential
from .health import HealthCollector

log = logging.getLogger("agent.link")


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} ({code})")
        self.code = code


def backoff_delay(attempt: int, low: float, high: float, rng: Callable[[], float]) -> float:
    """Full jitter: uniform in [low/2, min(high, low·2^attempt)]."""
    ceiling = min(high, low * (2 ** min(attempt, 30)))
    return float(max(low / 2, ceiling * rng()))


def session_info(session: ClassSession) -> SessionInfo:
    if session.state == SessionState.LIVE and session.token:
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
    ) -> None:
        self.credential = credential
        self.session = session
        self.configs = configs
        self.collector = collector
        self.options = options
        self.rng = rng
        self.state = "connecting"
        """``connecting``, ``connected``, ``waiting`` (backoff) or ``refused`` (stopped)."""
        self.refusal = ""
        self.connects = 0
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._connected = asyncio.Event()
        session.listeners.append(self._session_changed)

    async def run(self) -> None:
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
                log.info("link closed: %s", exc)
            except ProtocolError as exc:
                log.warning("the server broke the protocol: %s", exc.reason)
            finally:
                self._connected.clear()
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
        )
        await ws.send(encode(hello))
        try:
            welcome = parse_server_message(await asyncio.wait_for(ws.recv(), 20))
        except ConnectionClosed as exc:
            self._raise_if_final(exc)
            raise
        if not isinstance(welcome, Welcome):
            raise ProtocolError(4400, "the first message must be welcome")
        self.connects += 1
        self.state = "connected"
        self._connected.set()
        log.info("linked to %s as %s", self.credential.server, welcome.kit_id)
        tasks = [
            asyncio.create_task(self._report(ws, welcome.health_interval_s)),
            asyncio.create_task(self._send_outbox(ws)),
        ]
        try:
            await self._receive(ws)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _raise_if_final(self, exc: ConnectionClosed) -> None:
        if exc.rcvd is not None and exc.rcvd.code in FINAL_CLOSE_CODES:
            raise Refused(exc.rcvd.code, exc.rcvd.reason) from exc

    async def _receive(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                try:
                    self._dispatch(parse_server_message(frame))
                except ProtocolError as exc:
                    await ws.close(exc.code, exc.reason)
                    raise
        except ConnectionClosed as exc:
            self._raise_if_final(exc)
            raise
        if ws.close_code in FINAL_CLOSE_CODES:
            raise Refused(ws.close_code or 0, ws.close_reason or "")

    def _dispatch(self, message: Any) -> None:
        if isinstance(message, PushConfig):
            self._outbox.put_nowait(encode(self.configs.offer(message)))
        elif isinstance(message, WhepOffer):
            asyncio.get_running_loop().create_task(self._whep_offer(message))
        elif isinstance(message, WhepDelete):
            asyncio.get_running_loop().create_task(self._whep_delete(message))
        else:
            raise ProtocolError(4400, "welcome is only the first message")

    async def _report(self, ws: ClientConnection, interval: float) -> None:
        seq = 0
        while True:
            report = self.collector.report()
            await ws.send(encode(Health(seq=seq, sent_at=time.time(), report=report)))
            seq += 1
            await asyncio.sleep(interval)

    async def _send_outbox(self, ws: ClientConnection) -> None:
        while True:
            text = await self._outbox.get()
            await ws.send(text)

    def _session_changed(self, session: ClassSession) -> None:
        self._outbox.put_nowait(encode(Session(session=session_info(session))))
        ack = self.configs.session_changed()
        if ack is not None:
            self._outbox.put_nowait(encode(ack))

    # -- relayed WHEP --------------------------------------------------------------------------

    async def _whep_offer(self, offer: WhepOffer) -> None:
        try:
            viewer, answer = await self.session.add_viewer(offer.token, offer.sdp.encode())
            reply = WhepAnswer(req=offer.req, status=201, resource=viewer.id, sdp=answer)
        except RequestError as exc:
            reply = WhepAnswer(
                req=offer.req,
                status=exc.status,
                error=exc.public_message,
                class_state=exc.class_state,  # type: ignore[arg-type]
            )
        except Exception:
            log.exception("relayed WHEP offer failed")
            reply = WhepAnswer(req=offer.req, status=500, error="internal error")
        self._outbox.put_nowait(encode(reply))

    async def _whep_delete(self, delete: WhepDelete) -> None:
        try:
            await self.session.remove_viewer(delete.resource)
            reply = WhepDeleted(req=delete.req, status=200)
        except RequestError as exc:
            reply = WhepDeleted(req=delete.req, status=exc.status, error=exc.public_message)
        self._outbox.put_nowait(encode(reply))

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.session.listeners.remove(self._session_changed)
