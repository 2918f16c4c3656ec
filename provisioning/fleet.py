"""The fleet in memory: every kit's identity, link, latest health and configuration.

The database is the record; this is the working copy that the link handlers, the relay and the
dashboard read without a query. Health goes to the database through :class:`Writer`; a silent
kit is marked offline by :meth:`Fleet.sweep` (run every second) within ``offline_after_s``.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from kitlink import (
    CLOSE_REPLACED,
    CLOSE_REVOKED,
    CLOSE_TIMEOUT,
    FEATURE_CLASS_CONTROL,
    FEATURE_NETWORK_CONFIG,
    AnyServerMessage,
    ClassroomHealth,
    ConfigAck,
    Health,
    Hello,
    NetworkHealth,
    ProtocolError,
    PupilsHealth,
    PushConfig,
    PushedConfig,
    SessionInfo,
    config_version,
    merge_layers,
)

from . import store
from .cluster import (
    ROW_FIELDS,
    Cluster,
    LayerEvent,
    LinkEvent,
    TokenEvent,
    row_state,
    summary_state,
)
from .ice import KitIce
from .writer import Report, Writer

log = logging.getLogger("provisioning.fleet")

LEVELS = ("fleet", "school", "kit")

ENDED_TOKENS_KEPT = 100_000
"""Ended classes remembered in memory (their links answer "ended", no kit may claim them)."""
ENDED_TOKENS_KEEP_S = 7 * 86400.0
"""How long the database keeps an ended class's binding."""
CLAIM_BURST = 10.0
CLAIM_REFILL_PER_S = 1 / 120
"""New classes a kit may open: 10 at once, then one every 2 minutes (a teacher's Start/Stop
never comes near; a stolen credential cannot fill the server with bindings)."""
CONTESTED_REPLACEMENTS = 5
CONTESTED_WINDOW_S = 600.0
"""Two processes using one kit credential replace each other's link over and over."""


def pushable(desired: dict[str, Any], features: tuple[str, ...]) -> PushedConfig:
    """The configuration to push to a kit: ``desired`` without the sections its version does not
    know (a kit from before ``network`` would refuse the whole push and close the link). Such a
    kit applies the rest and keeps its own file's uplink budget (and, before ``class_control``,
    its own ``kiosk.waiting_room``)."""
    if FEATURE_NETWORK_CONFIG not in features:
        desired = {key: value for key, value in desired.items() if key != "network"}
    kiosk = desired.get("kiosk")
    if FEATURE_CLASS_CONTROL not in features and isinstance(kiosk, dict):
        # A kit before the waiting room (issue 17) would refuse the key, and the whole push.
        kiosk = {key: value for key, value in kiosk.items() if key != "waiting_room"}
        desired = {key: value for key, value in desired.items() if key != "kiosk"}
        if kiosk:
            desired["kiosk"] = kiosk
    return PushedConfig.model_validate(desired)


class Link(Protocol):
    """One kit's open WebSocket, as the fleet sees it."""

    async def send(self, message: AnyServerMessage) -> None: ...

    def close_soon(self, code: int, reason: str) -> None: ...


@dataclass(slots=True, eq=False)
class Kit:
    id: str
    name: str
    school_id: str
    departement: str
    secret_hash: str
    revoked: bool = False
    online: bool = False
    last_seen: float | None = None
    offline_since: float | None = None
    software: str = ""
    health: str | None = None
    """The latest report, as validated JSON text (kept as text: 15,000 kits stay small)."""
    problems: tuple[str, ...] = ()
    session: str = "idle"
    applied_config: str | None = None
    config_status: str = ""
    config_reason: str = ""
    desired: dict[str, Any] = field(default_factory=dict)
    desired_version: str = ""
    link: Link | None = None
    link_node: str | None = None
    """The node holding the kit's link (several nodes, docs/cluster.md): this one's id when
    :attr:`link` is set; another's when the kit is linked there; None when offline."""
    linked_at: float = 0.0
    """When this node accepted the kit's current link (a stale "moved" event is older)."""
    claiming: str | None = None
    """A class token this kit claimed that the database has not yet given it (cluster)."""
    features: tuple[str, ...] = ()
    """What the kit's latest hello said it understands beyond version 1."""
    token: str | None = None
    history_at: float = 0.0
    backlog_at: float = 0.0
    """``sent_at`` of the last queued report kept in the history (docs/protocol.md)."""
    backlog_problems: tuple[str, ...] = ()
    claim_budget: float = CLAIM_BURST
    claim_budget_at: float = 0.0
    refused_digests: tuple[str, ...] = ()
    """The last digests this kit was refused (each is audited once)."""
    replacements: tuple[float, ...] = ()
    contested_at: float | None = None
    class_started_at: float | None = None
    """When the server saw the live class's claim (pupils' TURN credentials last until its
    expected end, provisioning/ice.py)."""
    ice: KitIce | None = None
    """The kit's current TURN credential set (kits with the ``ice_servers`` feature)."""
    ice_wake: asyncio.Event | None = None
    """Set when a class starts: wakes the link's task that sends ``ice_servers``."""
    network: NetworkHealth | None = None
    """The network part of the latest report: how the school gets out, pupils by path."""
    pupils_view: tuple[object, ...] | None = None
    """What the kit page shows of the class's distribution, to publish only its changes."""
    classroom: ClassroomHealth | None = None
    """The live class's counts as last reported (no names): a change is published too."""

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "school": self.school_id,
            "departement": self.departement,
            "revoked": self.revoked,
            "online": self.online,
            "last_seen": self.last_seen,
            "offline_since": self.offline_since,
            "software": self.software,
            "problems": list(self.problems),
            "session": self.session,
            "network": self.network.model_dump() if self.network is not None else None,
            "config": {
                "desired": self.desired_version,
                "applied": self.applied_config,
                "status": self.config_status,
                "reason": self.config_reason,
            },
        }


@dataclass(frozen=True, slots=True)
class Settings:
    health_interval_s: float = 10.0
    offline_after_s: float = 30.0
    history_every_s: float = 60.0
    history_keep_s: float = 6 * 3600.0


Scope = Callable[[Kit], bool]


def _network_view(network: NetworkHealth | None) -> tuple[object, ...] | None:
    """What the dashboard shows of a kit's network (a new probe time alone is no news)."""
    if network is None:
        return None
    return (network.reach, network.turn_error, tuple(sorted(network.paths.items())))


def _pupils_view(pupils: PupilsHealth | None) -> tuple[object, ...] | None:
    """What changes the kit page's class distribution: the counts per layer and quality (the
    worst loss moves at every report; it is shown, but alone is no news worth a push)."""
    if pupils is None:
        return None
    layers = pupils.layers
    return (
        tuple(sorted(pupils.quality.items())),
        tuple(sorted(layers.camera.items())),
        tuple(sorted(layers.document.items())),
    )


def _stored_network(health: str | None) -> NetworkHealth | None:
    """The network part of a latest report kept in the database (validated when received)."""
    if not health or '"network"' not in health:
        return None
    try:
        value = json.loads(health).get("network")
        return NetworkHealth.model_validate(value) if value is not None else None
    except (ValueError, ValidationError):
        log.warning("a stored health report has an unreadable network part: ignored")
        return None


def _identity(row: dict[str, Any]) -> dict[str, Any]:
    """What a kit's row says of who it is (the rest is its state)."""
    return {name: row[name] for name in ("id", "name", "school_id", "departement", "secret_hash")}


class Fleet:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        writer: Writer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.writer = writer
        self.clock = clock
        self.kits: dict[str, Kit] = {}
        self.by_token: dict[str, Kit] = {}
        self.expired_tokens: collections.OrderedDict[str, str] = collections.OrderedDict()
        """Digests of ended classes → the kit that created each."""
        self.claims_refused = 0
        self.layers: dict[tuple[str, str], dict[str, Any]] = {}
        self._seen: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._subscribers: list[tuple[Scope, asyncio.Queue[dict[str, Any] | None]]] = []
        self.reports_received = 0
        self.backlog_received = 0
        """Queued reports kits sent after a link outage."""
        self.backlog_dropped = 0
        """Reports kits said they dropped while offline (their queue is bounded)."""
        self.links_opened = 0
        self.cluster: Cluster | None = None
        """Set when this server is one node of several (provisioning/cluster.py)."""

    async def load(self) -> None:
        """The fleet from the database. One node: no kit is linked yet. In a cluster, the
        kits of the other live nodes keep their state (this node's were released by
        :meth:`Cluster.start_up`)."""
        now = self.clock()
        if self.cluster is None:
            await store.mark_all_offline(self.engine, now)
        self.layers = await store.load_config_layers(self.engine)
        for row in await store.load_kits(self.engine):
            kit = self._kit_of(row)
            self.kits[kit.id] = kit
        for row in await store.load_class_tokens(self.engine, now - ENDED_TOKENS_KEEP_S):
            self._restore_token(row)

    def _kit_of(self, row: dict[str, Any]) -> Kit:
        kit = Kit(
            **_identity(row),
            revoked=row["revoked_at"] is not None,
            last_seen=row["last_seen"],
            offline_since=row["offline_since"] or row["last_seen"],
            software=row["software"],
            health=row["health"],
            applied_config=row["applied_config"],
            config_status=row["config_status"],
            config_reason=row["config_reason"],
            network=_stored_network(row["health"]),
        )
        if self.cluster is not None:
            row_state(kit, row)
        self._compute_desired(kit)
        return kit

    def _restore_token(self, row: dict[str, Any]) -> None:
        kit = self.kits.get(row["kit_id"])
        if row["ended_at"] is not None or kit is None or kit.revoked:
            self._remember_ended(row["digest"], row["kit_id"])
            return
        if kit.token is not None:
            self._remember_ended(kit.token, kit.id)
        kit.token = row["digest"]
        kit.class_started_at = row["claimed_at"]
        self.by_token[kit.token] = kit

    def add(self, row: dict[str, Any]) -> Kit:
        kit = Kit(**_identity(row))
        self._compute_desired(kit)
        self.kits[kit.id] = kit
        self.publish(kit)
        return kit

    # -- authentication and the link's lifecycle ----------------------------------------------

    async def learn_kit(self, kit_id: str) -> None:
        """In a cluster, a kit this node does not know yet (enrolled on another node, its event
        still on the way) is read from the database."""
        if self.cluster is not None and kit_id not in self.kits:
            row = await store.load_kit(self.engine, kit_id)
            if row is not None and row["id"] not in self.kits:
                self.apply_row(row)

    def authenticate(self, kit_id: str, secret: str) -> Kit | None:
        kit = self.kits.get(kit_id)
        digest = store.sha256_hex(secret)
        if kit is None or not hmac.compare_digest(digest, kit.secret_hash):
            return None
        return kit

    async def attach(self, kit: Kit, link: Link, hello: Hello) -> None:
        if kit.revoked:  # revoked since its hello was authenticated (the welcome was in flight)
            raise ProtocolError(CLOSE_REVOKED, "this kit's credential has been revoked")
        old = kit.link
        now = self.clock()
        if old is not None and old is not link:
            old.close_soon(CLOSE_REPLACED, "replaced by a newer connection of this kit")
            self._replaced(kit, now)
        kit.link = link
        if self.cluster is not None:  # other nodes route this kit's pupils here now
            kit.link_node, kit.linked_at = self.cluster.node_id, now
            self.cluster.link_state(kit.id, True)
            self.cluster.announce(LinkEvent(node=self.cluster.node_id, kit=kit.id, at=now))
        self.links_opened += 1
        kit.software = hello.software
        kit.features = tuple(hello.features)
        kit.applied_config = hello.config_version
        self._mark_seen(kit, now)
        self._set_online(kit, True, now)
        self.set_session(kit, hello.session)
        if hello.config_version != kit.desired_version:
            await self.push_config(kit)

    def detach(self, kit: Kit, link: Link) -> None:
        if kit.link is not link:
            return  # replaced: the newer link owns the kit now
        kit.link = None
        self._seen.pop(kit.id, None)
        self._release(kit)
        self._set_online(kit, False, self.clock())

    def _release(self, kit: Kit) -> None:
        """In a cluster, the kit's link row is cleared (if still this node's)."""
        if self.cluster is not None:
            if kit.link_node == self.cluster.node_id:
                kit.link_node = None
            self.cluster.link_state(kit.id, False)

    def _replaced(self, kit: Kit, now: float) -> None:
        """A kit's link replaced by another: normal after a network change, but over and over
        it means two machines hold one credential (a stolen or copied kit): audit it."""
        recent = tuple(t for t in kit.replacements if now - t < CONTESTED_WINDOW_S)
        kit.replacements = (*recent, now)[-CONTESTED_REPLACEMENTS:]
        if len(kit.replacements) < CONTESTED_REPLACEMENTS:
            return
        if kit.contested_at is not None and now - kit.contested_at < CONTESTED_WINDOW_S:
            return
        kit.contested_at = now
        log.warning("kit %s: its credential is used by two connections at once", kit.id)
        self._audit(kit, "kit.link.contested", kit.id, {"replacements": len(kit.replacements)})

    def _audit(self, kit: Kit, action: str, target: str, detail: dict[str, Any]) -> None:
        self.writer.audit(self.clock(), f"kit:{kit.id}", action, target, json.dumps(detail))

    def _mark_seen(self, kit: Kit, now: float) -> None:
        kit.last_seen = now
        self._seen[kit.id] = time.monotonic()
        self._seen.move_to_end(kit.id)

    def _set_online(self, kit: Kit, online: bool, now: float) -> None:
        if kit.online == online:
            return
        kit.online = online
        kit.offline_since = None if online else kit.last_seen or now
        if self.cluster is not None:  # with link_node, only if still this node's
            self.cluster.link_state(kit.id, online)
        else:
            self.writer.online(kit.id, online, kit.offline_since, kit.last_seen or now)
        self.publish(kit)

    def sweep(self, monotonic_now: float | None = None) -> list[Kit]:
        """Mark offline (and disconnect) every kit silent for ``offline_after_s``."""
        now = time.monotonic() if monotonic_now is None else monotonic_now
        limit = now - self.settings.offline_after_s
        silent: list[Kit] = []
        while self._seen:
            kit_id, seen = next(iter(self._seen.items()))
            if seen > limit:
                break
            del self._seen[kit_id]
            kit = self.kits[kit_id]
            silent.append(kit)
            self._set_online(kit, False, self.clock())
            if kit.link is not None:
                kit.link.close_soon(CLOSE_TIMEOUT, "no message for too long")
                kit.link = None
                self._release(kit)
        if silent:
            log.info(
                "%d kit(s) silent for %.0f s: offline", len(silent), self.settings.offline_after_s
            )
        return silent

    # -- messages -----------------------------------------------------------------------------

    def health(self, kit: Kit, message: Health) -> None:
        now = self.clock()
        self.reports_received += 1
        self._mark_seen(kit, now)
        if message.queued or message.dropped:
            self._backlog(kit, message, now)
            if message.queued:
                self.writer.acknowledge(kit.id, message.sent_at)
                return
        report = message.report
        text = report.model_dump_json()
        problems = tuple(report.problems())
        changed = problems != kit.problems or report.session.state != kit.session
        keep = changed or now - kit.history_at >= self.settings.history_every_s
        if keep:
            kit.history_at = now
        network_changed = _network_view(report.network) != _network_view(kit.network)
        pupils_view = _pupils_view(report.pupils)
        network_changed |= pupils_view != kit.pupils_view
        kit.pupils_view = pupils_view
        network_changed |= report.classroom != kit.classroom
        kit.classroom = report.classroom
        kit.health = text
        kit.problems = problems
        kit.session = report.session.state
        kit.network = report.network
        stored = Report(text, kit.software, kit.session, problems, message.sent_at)
        self.writer.health(kit.id, now, stored, keep)
        if not kit.online:
            self._set_online(kit, True, now)  # publishes
        elif changed or network_changed:
            self.publish(kit)

    def _backlog(self, kit: Kit, message: Health, now: float) -> None:
        """A report the kit queued while its link was down: into the history at the time the
        kit made it (within the retention window, never in the future), not as the latest."""
        if message.dropped:
            self.backlog_dropped += message.dropped
            log.info("kit %s dropped %d health report(s) while offline", kit.id, message.dropped)
        if not message.queued:
            return
        self.backlog_received += 1
        report = message.report
        problems = tuple(report.problems())
        at = min(now, max(now - self.settings.history_keep_s, message.sent_at))
        spaced = abs(at - kit.backlog_at) >= self.settings.history_every_s
        if problems != kit.backlog_problems or spaced:
            kit.backlog_at, kit.backlog_problems = at, problems
            self.writer.backlog(kit.id, at, report.model_dump_json(), message.sent_at)

    def config_ack(self, kit: Kit, ack: ConfigAck) -> None:
        self._mark_seen(kit, self.clock())
        if ack.status == "applied":
            kit.applied_config = ack.version
        kit.config_status = ack.status
        kit.config_reason = ack.reason
        self.writer.config_ack(kit.id, kit.applied_config, ack.status, ack.reason)
        if ack.status == "refused":
            log.warning("kit %s refused config %s: %s", kit.id, ack.version, ack.reason)
        self.publish(kit)

    # -- class tokens: the server owns which kit created which class --------------------------

    def owner(self, digest: str) -> str | None:
        """The kit that created the class with this token digest, live or ended."""
        live = self.by_token.get(digest)
        return live.id if live is not None else self.expired_tokens.get(digest)

    def set_session(self, kit: Kit, info: SessionInfo) -> None:
        """A kit's session state: it may open a class under a new token, re-claim its own
        after a reconnect, and end only its own. A digest bound to another kit is refused
        (and audited): the kit keeps its link but gets no pupils under that token."""
        digest = info.token_sha256 if info.state == "live" else None
        if digest is not None and digest != kit.token and not self._may_claim(kit, digest):
            digest = None
        if kit.token is not None and kit.token != digest:
            self._end_token(kit)
        kit.claiming = None
        if digest is not None and digest != kit.token:
            if self.cluster is not None and self.owner(digest) is None:
                kit.claiming = digest  # another node may have bound it: the database decides
                self.cluster.claim(kit, digest)
            else:
                self._bind(kit, digest)
        if kit.session != info.state:
            kit.session = info.state
            self.publish(kit)

    def _bind(self, kit: Kit, digest: str) -> None:
        kit.token = digest
        kit.class_started_at = self.clock()
        self.by_token[digest] = kit
        self.expired_tokens.pop(digest, None)  # its own class, resumed after a restart
        self.writer.token(digest, kit.id, self.clock(), None)
        if kit.ice_wake is not None:  # the class's TURN credentials (provisioning/link.py)
            kit.ice_wake.set()
        if self.cluster is not None:
            event = TokenEvent(
                node=self.cluster.node_id, kit=kit.id, digest=digest, live=True, at=self.clock()
            )
            self.cluster.announce(event)

    def claimed(self, kit: Kit, digest: str, owner: str) -> None:
        """The database's answer to a claim (:meth:`Cluster.claim`): ``owner`` is the kit the
        digest is bound to ("" when the database could not be asked: no pupils for now)."""
        if kit.claiming != digest:  # the class ended (or changed) while the claim was out
            if owner == kit.id:
                self.writer.token(digest, kit.id, self.clock(), self.clock())
            return
        kit.claiming = None
        if owner == kit.id and not kit.revoked:
            self._bind(kit, digest)
        elif owner:
            self._remember_owner(digest, owner)
            self._refuse_claim(kit, digest, "class-of-another-kit", owner)
        else:
            log.warning("kit %s: its class could not be registered (database)", kit.id)

    def _remember_owner(self, digest: str, owner: str) -> None:
        """A binding another node made, learnt from the database before its event came."""
        holder = self.kits.get(owner)
        if holder is not None and holder.token is None and digest not in self.expired_tokens:
            self.apply_token(holder, digest, True, self.clock())

    def _may_claim(self, kit: Kit, digest: str) -> bool:
        owner = self.owner(digest)
        if owner == kit.id:
            return True
        if owner is not None:
            self._refuse_claim(kit, digest, "class-of-another-kit", owner)
            return False
        now = time.monotonic()
        refill = (now - kit.claim_budget_at) * CLAIM_REFILL_PER_S
        kit.claim_budget = min(CLAIM_BURST, kit.claim_budget + refill)
        kit.claim_budget_at = now
        if kit.claim_budget < 1:
            self._refuse_claim(kit, digest, "too-many-classes", "")
            return False
        kit.claim_budget -= 1
        return True

    def _refuse_claim(self, kit: Kit, digest: str, reason: str, owner: str) -> None:
        self.claims_refused += 1
        if digest in kit.refused_digests:
            return
        kit.refused_digests = (*kit.refused_digests, digest)[-16:]
        log.warning("kit %s claimed a class it may not open (%s)", kit.id, reason)
        detail = {"reason": reason, "digest": digest[:16], "owner": owner}
        self._audit(kit, "class.claim.refused", owner or kit.id, detail)

    def _end_token(self, kit: Kit) -> None:
        assert kit.token is not None
        self.by_token.pop(kit.token, None)
        self._remember_ended(kit.token, kit.id)
        self.writer.token(kit.token, kit.id, self.clock(), self.clock())
        if self.cluster is not None:
            event = TokenEvent(
                node=self.cluster.node_id, kit=kit.id, digest=kit.token, live=False, at=0.0
            )
            self.cluster.announce(event)
        kit.token = None
        kit.class_started_at = None

    def _remember_ended(self, digest: str, kit_id: str) -> None:
        self.expired_tokens[digest] = kit_id
        self.expired_tokens.move_to_end(digest)
        while len(self.expired_tokens) > ENDED_TOKENS_KEPT:
            self.expired_tokens.popitem(last=False)

    # -- admin actions --------------------------------------------------------------------------

    async def revoke(self, kit: Kit) -> None:
        kit.revoked = True
        await store.update_kit(self.engine, kit.id, revoked_at=self.clock())
        if kit.link is not None:
            kit.link.close_soon(CLOSE_REVOKED, "this kit's credential has been revoked")
            self.detach(kit, kit.link)
        if kit.token is not None:
            self._end_token(kit)
        self.publish(kit)

    async def change(self, kit: Kit, name: str | None, school: dict[str, Any] | None) -> None:
        values: dict[str, Any] = {}
        if name is not None:
            kit.name = values["name"] = name
        if school is not None:
            kit.school_id = values["school_id"] = school["id"]
            kit.departement = school["departement"]
        if values:
            await store.update_kit(self.engine, kit.id, **values)
        if school is not None:
            await self._reconfigure([kit])
        self.publish(kit)

    # -- configuration --------------------------------------------------------------------------

    def effective(self, school_id: str, kit_id: str) -> dict[str, Any]:
        return merge_layers(
            self.layers.get(("fleet", ""), {}),
            self.layers.get(("school", school_id), {}),
            self.layers.get(("kit", kit_id), {}),
        )

    def _compute_desired(self, kit: Kit) -> bool:
        desired = self.effective(kit.school_id, kit.id)
        version = config_version(desired)
        changed = version != kit.desired_version
        kit.desired, kit.desired_version = desired, version
        return changed

    async def set_layer(
        self, level: str, scope_id: str, overlay: dict[str, Any], actor: str
    ) -> int:
        """Store a configuration layer and push the result to every kit it changes."""
        await store.put_config_layer(self.engine, level, scope_id, overlay, actor)
        self.layers[(level, scope_id)] = overlay
        if self.cluster is not None:
            self.cluster.announce(
                LayerEvent(node=self.cluster.node_id, level=level, scope=scope_id)  # type: ignore[arg-type]
            )
        return await self._reconfigure(self._affected(level, scope_id))

    def _affected(self, level: str, scope_id: str) -> list[Kit]:
        return [
            kit
            for kit in self.kits.values()
            if level == "fleet"
            or (level == "school" and kit.school_id == scope_id)
            or (level == "kit" and kit.id == scope_id)
        ]

    async def _reconfigure(self, kits: list[Kit], remote: bool = False) -> int:
        pushed = 0
        for done, kit in enumerate(kits, 1):
            if done % 500 == 0:  # 15,000 kits held the event loop ~80 ms at once: now ~3 ms
                await asyncio.sleep(0)
            if self._compute_desired(kit):
                kit.config_status = "pending"
                self.publish(kit, remote=remote)
                if await self.push_config(kit):
                    pushed += 1
        return pushed

    async def push_config(self, kit: Kit) -> bool:
        if kit.link is None or kit.revoked:
            return False
        message = PushConfig(
            version=kit.desired_version, config=pushable(kit.desired, kit.features)
        )
        try:
            await kit.link.send(message)
        except (ConnectionError, RuntimeError):
            return False
        kit.config_status = "pending"
        return True

    # -- other nodes' events (provisioning/cluster.py) ------------------------------------------

    async def apply_summary(self, kit: Kit, summary: dict[str, Any], link_node: str | None) -> None:
        """A kit's change seen by another node. What an admin changes (name, school, revoked)
        applies everywhere; the link's state only to a kit whose link is not here (this node's
        own view of its kits is theirs). The kit's :attr:`Kit.link` is never touched."""
        school = str(summary.get("school", kit.school_id))
        moved = school != kit.school_id
        kit.name = str(summary.get("name", kit.name))
        kit.school_id, kit.departement = school, str(summary.get("departement", kit.departement))
        if summary.get("revoked") is True and not kit.revoked:
            self._revoked_elsewhere(kit)
        if kit.link is None:
            summary_state(kit, summary, link_node)
        if moved:
            await self._reconfigure([kit], remote=True)
        self.publish(kit, remote=True)

    def _revoked_elsewhere(self, kit: Kit) -> None:
        kit.revoked = True
        if kit.link is not None:
            kit.link.close_soon(CLOSE_REVOKED, "this kit's credential has been revoked")
            self.detach(kit, kit.link)
        if kit.token is not None:  # the revoking node stored the class's end
            self.by_token.pop(kit.token, None)
            self._remember_ended(kit.token, kit.id)
            kit.token = None

    def apply_token(self, kit: Kit, digest: str, live: bool, at: float) -> None:
        """A class claimed or ended on the node holding ``kit``'s link."""
        if kit.link is not None:
            return  # linked here now: this node's binding is the kit's latest
        if live:
            if kit.token is not None and kit.token != digest:
                self.by_token.pop(kit.token, None)
                self._remember_ended(kit.token, kit.id)
            kit.token, kit.class_started_at = digest, at
            self.by_token[digest] = kit
            self.expired_tokens.pop(digest, None)
            return
        if kit.token == digest:
            kit.token, kit.class_started_at = None, None
        if self.by_token.get(digest) is kit:
            del self.by_token[digest]
        self._remember_ended(digest, kit.id)

    def moved_away(self, kit: Kit, node: str, at: float) -> None:
        """The kit linked to ``node`` at ``at``: a link it still has here is stale (closed,
        and its end changes nothing: the kit is online there) unless it is the newer one."""
        old = kit.link
        if old is not None and at < kit.linked_at:
            return  # the kit came back here since: that event is old news
        kit.link_node = node
        if old is not None:
            kit.link = None
            self._seen.pop(kit.id, None)
            old.close_soon(CLOSE_REPLACED, "replaced by a newer connection of this kit")

    def node_dead(self, node: str) -> list[Kit]:
        """``node`` was taken over: its kits are offline (the database says so already)."""
        now = self.clock()
        gone = [k for k in self.kits.values() if k.link_node == node and k.link is None]
        for kit in gone:
            kit.link_node = None
            if kit.online:
                kit.online = False
                kit.offline_since = kit.last_seen or now
                self.publish(kit, remote=True)
        return gone

    async def apply_layer(self, level: str, scope_id: str, overlay: dict[str, Any] | None) -> None:
        """A configuration layer another node stored: pushed to the kits linked here."""
        if overlay is None:
            self.layers.pop((level, scope_id), None)
        else:
            self.layers[(level, scope_id)] = overlay
        await self._reconfigure(self._affected(level, scope_id), remote=True)

    def apply_row(self, row: dict[str, Any]) -> Kit:
        """A kit as the database has it (one enrolled on another node, or a resync)."""
        kit = self.kits.get(row["id"])
        if kit is None:
            kit = self.kits[row["id"]] = self._kit_of(row)
        elif kit.link is None:
            fresh = self._kit_of(row)
            for name in ROW_FIELDS:
                setattr(kit, name, getattr(fresh, name))
            self._compute_desired(kit)
        self.publish(kit, remote=True)
        return kit

    # -- live updates for the dashboard -------------------------------------------------------

    def subscribe(self, scope: Scope) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(maxsize=2000)
        self._subscribers.append((scope, queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._subscribers = [(s, q) for s, q in self._subscribers if q is not queue]

    def close_subscribers(self) -> None:
        for _scope, queue in self._subscribers:
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait({"_close": True})

    def publish(self, kit: Kit, remote: bool = False) -> None:
        """Tell this node's dashboards of ``kit``'s change, and the other nodes unless the
        change came from one of them (``remote``)."""
        if self.cluster is not None and not remote:
            self.cluster.kit_changed(kit)
        if not self._subscribers:
            return
        event = kit.summary()
        for scope, queue in self._subscribers:
            if scope(kit):
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    # A dashboard that cannot keep up is told to reload its whole list.
                    while not queue.empty():
                        queue.get_nowait()
                    queue.put_nowait(None)
