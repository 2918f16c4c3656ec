"""The pupil relay: the agent's WHEP contract (docs/whep.md), answered through the kit's link.

``POST /whep/<token>`` finds the kit whose live class has that token (the kit sent only the
token's SHA-256), sends the offer over its link and answers with the kit's SDP answer. Media
never flows through this server: the answer carries the kit's own ICE candidates (and TURN, when
configured). ``Location`` names a server-side resource id mapped to (kit, viewer).

Offers are rate-limited per client address (behind a trusted proxy, the pupil's forwarded
address): 200 offers in a burst from one client filled a class and refused real pupils for the
kit's whole connect timeout. A token bucket per address (``ServerOptions.whep_burst``, 20 at
once, then ``whep_rate_per_s``, 1 a second) answers the rest ``429`` with ``Retry-After``,
before the token is looked up or the body read; the pupil page retries a 429 like any refusal.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass

from kitlink import (
    FEATURE_CLASS_CONTROL,
    WhepAnswer,
    WhepDelete,
    WhepDeleted,
    WhepOffer,
    token_digest,
)

from .errors import (
    BadGateway,
    GatewayTimeout,
    KitRefusal,
    NotFound,
    RequestError,
    ServiceUnavailable,
)
from .fleet import Fleet, Kit
from .limits import RateLimit

log = logging.getLogger("provisioning.relay")

RELAYED_STATUSES = frozenset({400, 403, 404, 409, 413, 415, 503})
"""Refusals of the kit passed on to the pupil as they are (with the kit's public message);
403: a locked class, or a pupil the teacher removed (``X-Class-State``, docs/whep.md)."""
PUPIL_KEY = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
"""The page's rejoin key (``X-Pupil-Key``); anything else is not passed on."""


@dataclass(slots=True)
class Pending:
    kit_id: str
    future: asyncio.Future[WhepAnswer | WhepDeleted]


class Relay:
    def __init__(
        self,
        fleet: Fleet,
        timeout_s: float = 15.0,
        offer_limit: RateLimit | None = None,
        node_id: str = "",
    ) -> None:
        self.fleet = fleet
        self.node_id = node_id
        """In a cluster, this node's id: the suffix of the resource ids it mints, so that any
        node can send a pupil's DELETE to the node that knows the resource (docs/cluster.md)."""
        self.timeout_s = timeout_s
        self.offer_limit = offer_limit if offer_limit is not None else RateLimit(20, 1.0)
        self.pending: dict[str, Pending] = {}
        self.resources: dict[str, tuple[str, str]] = {}
        """Server resource id → (kit id, the kit's viewer id)."""
        self.offers = 0

    def admit(self, client_key: str) -> None:
        """One offer from this client (a :func:`provisioning.forwarded.rate_key`), or 429."""
        self.offer_limit.take(client_key)

    def find_kit(self, token: str, linked_here: bool = True) -> Kit:
        """The kit of a live class's token, or the refusal for the pupil. ``linked_here``
        False (a cluster node that may forward): the kit may be linked to another node."""
        digest = token_digest(token)
        kit = self.fleet.by_token.get(digest)
        if kit is None:
            if digest in self.fleet.expired_tokens:
                raise NotFound("this link has expired: the class has ended", "ended")
            raise NotFound("unknown link", "invalid")
        if kit.revoked:
            raise NotFound("unknown link", "invalid")
        if kit.link is None and linked_here:
            raise ServiceUnavailable(
                "the classroom is not reachable right now; try again soon", retry_after_s=2
            )
        return kit

    async def offer(self, token: str, sdp: str, pupil_key: str | None = None) -> tuple[str, str]:
        """Returns (Location, answer SDP) or raises the refusal to send to the pupil.
        ``pupil_key`` (the page's ``X-Pupil-Key``) goes only to kits that know it."""
        kit = self.find_kit(token)
        req = secrets.token_urlsafe(12)
        if FEATURE_CLASS_CONTROL not in kit.features or not PUPIL_KEY.match(pupil_key or ""):
            pupil_key = None
        offer = WhepOffer(req=req, token=token, sdp=sdp, pupil_key=pupil_key)
        reply = await self._ask(kit, req, offer)
        assert isinstance(reply, WhepAnswer)
        if reply.status == 201 and reply.sdp and reply.resource:
            resource = secrets.token_urlsafe(16) + (f".{self.node_id}" if self.node_id else "")
            self.resources[resource] = (kit.id, reply.resource)
            self.offers += 1
            return f"/whep/resource/{resource}", reply.sdp
        raise _refusal(reply.status, reply.error, reply.class_state)

    async def delete(self, resource: str) -> None:
        entry = self.resources.get(resource)
        if entry is None:
            raise NotFound("unknown WHEP session")
        kit = self.fleet.kits.get(entry[0])
        if kit is None or kit.link is None:
            self.resources.pop(resource, None)
            raise NotFound("unknown WHEP session")
        req = secrets.token_urlsafe(12)
        reply = await self._ask(kit, req, WhepDelete(req=req, resource=entry[1]))
        self.resources.pop(resource, None)
        if reply.status >= 300:
            raise _refusal(reply.status, reply.error)

    async def _ask(
        self, kit: Kit, req: str, message: WhepOffer | WhepDelete
    ) -> WhepAnswer | WhepDeleted:
        future: asyncio.Future[WhepAnswer | WhepDeleted] = (
            asyncio.get_running_loop().create_future()
        )
        self.pending[req] = Pending(kit.id, future)
        try:
            assert kit.link is not None
            try:
                await kit.link.send(message)
            except (ConnectionError, RuntimeError):
                raise ServiceUnavailable("the classroom is not reachable right now") from None
            async with asyncio.timeout(self.timeout_s):
                return await future
        except TimeoutError:
            raise GatewayTimeout("the classroom did not answer in time") from None
        finally:
            self.pending.pop(req, None)

    def resolve(self, kit: Kit, reply: WhepAnswer | WhepDeleted) -> None:
        pending = self.pending.get(reply.req)
        if pending is None or pending.kit_id != kit.id or pending.future.done():
            log.info("kit %s answered an unknown or finished request", kit.id)
            return
        pending.future.set_result(reply)

    def kit_gone(self, kit: Kit) -> None:
        """The kit's link closed: pupils waiting on it get an answer now, not at the timeout."""
        for pending in list(self.pending.values()):
            if pending.kit_id == kit.id and not pending.future.done():
                pending.future.set_exception(
                    ServiceUnavailable("the classroom went offline; try again soon")
                )

    def kit_idle(self, kit: Kit) -> None:
        """The class ended: its viewers are closed by the kit, forget their resources."""
        for resource, (kit_id, _viewer) in list(self.resources.items()):
            if kit_id == kit.id:
                del self.resources[resource]


def _refusal(status: int, error: str, class_state: str | None = None) -> RequestError:
    if status in RELAYED_STATUSES:
        return KitRefusal(status, error or "refused by the classroom", class_state)
    log.warning("kit answered a relayed request with %d", status)
    return BadGateway("the classroom could not answer")
