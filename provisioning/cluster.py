"""Several server nodes on one PostgreSQL (docs/cluster.md): who is alive, who holds which
kit's link, and the events that keep every node's in-memory fleet and dashboards current.

- **Nodes.** Each node has a row in ``nodes`` and renews its ``heartbeat_at`` every
  :data:`HEARTBEAT_S`; a row older than :data:`DEAD_AFTER_S` is a dead node. Every live node
  tries to take dead ones over with one ``DELETE … RETURNING`` (each dead row goes to exactly
  one of them), which in the same transaction marks the dead node's kits offline and announces
  it. A node that finds its own row gone (it stalled that long) registers again and re-asserts
  the links it still holds.
- **Links.** ``kits.link_node`` names the node holding a kit's link: written (with ``online``)
  in the node's next flush, every :data:`FLUSH_S`, and cleared when the link ends only if it is
  still this node's (a newer link on another node wins).
- **Events.** PostgreSQL ``LISTEN/NOTIFY`` on channel ``fleet``, JSON payloads of at most
  :data:`MAX_PAYLOAD` bytes: a kit's summary (what the dashboard shows), a class token claimed
  or ended, a configuration layer changed, a link moved to a node, a node taken over. Sent in
  the flush transaction (so they arrive after the rows they describe), received on a dedicated
  asyncpg connection that is reopened, and the fleet reloaded, when it drops.
- **Pupils.** A WHEP request reaching a node that does not hold the kit's link is forwarded to
  the node that does, signed with the cluster secret (:class:`ForwardAuth`).

The message parts (:func:`encode`, :func:`decode`, :class:`ForwardAuth`, :func:`resource_node`,
:func:`stale_before`) do no I/O and are tested message-in/message-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

import aiohttp
import asyncpg
from aiohttp import web
from multidict import CIMultiDict
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from yarl import URL

from kitlink import MAX_SDP, NetworkHealth

from . import store
from .errors import ConfigError, Forbidden, ServiceUnavailable

if TYPE_CHECKING:
    from .fleet import Fleet, Kit

log = logging.getLogger("provisioning.cluster")

CHANNEL = "fleet"
HEARTBEAT_S = 2.0
DEAD_AFTER_S = 30.0
"""15 missed heartbeats (``--node-dead-after``). At 10 s, under a reconnection storm on a
loaded 2-core machine, both nodes of a benchmark took each other over (a busy node's heartbeat
came late); a killed node's kits redial at once anyway, so this only bounds how long a dead
node's *silent* kits still show online (as ``--offline-after`` does for one kit)."""
FLUSH_S = 0.05
"""Link rows and events are written this often: a pupil's request routed by ``link_node``
sees a new link within ~100 ms."""
MAX_PAYLOAD = 8000
"""PostgreSQL's NOTIFY limit is 8,000 bytes."""
MAX_PENDING = 50_000
"""Events waiting for the next flush (one per kit at most, so a whole fleet fits)."""
FORWARD_SKEW_S = 30.0
"""A forwarded request's signature is accepted this long around its time."""
FORWARD_MAX_BODY = 2 * MAX_SDP
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

HEADER_NODE = "X-Kit-Cluster-Node"
HEADER_TIME = "X-Kit-Cluster-Time"
HEADER_PUPIL = "X-Kit-Cluster-Pupil"
HEADER_AUTH = "X-Kit-Cluster-Auth"
FORWARD_HEADERS = (HEADER_NODE, HEADER_TIME, HEADER_PUPIL, HEADER_AUTH)
PASSED_BACK = (
    "Location",
    "Link",
    "Content-Type",
    "Retry-After",
    "ETag",
    "X-Class-State",
    "Accept-Post",
    "Allow",
)
"""The answer's headers a forwarding node passes to the pupil unchanged (CORS is its own)."""


# -- events (pure) --------------------------------------------------------------------------------


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    node: str = Field(min_length=1, max_length=64)
    """The node that sent it."""


class KitEvent(_Event):
    kind: Literal["kit"] = "kit"
    summary: dict[str, Any]
    """:meth:`provisioning.fleet.Kit.summary` (without ``network`` if it would not fit)."""
    link_node: str | None = Field(default=None, max_length=64)


class TokenEvent(_Event):
    kind: Literal["token"] = "token"
    kit: str = Field(min_length=1, max_length=32)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    live: bool
    at: float


class LayerEvent(_Event):
    kind: Literal["layer"] = "layer"
    level: Literal["fleet", "school", "kit"]
    scope: str = Field(max_length=64)


class LinkEvent(_Event):
    kind: Literal["link"] = "link"
    kit: str = Field(min_length=1, max_length=32)
    """This kit's link is now on :attr:`node`."""
    at: float = 0.0
    """When that node accepted it."""


class DeadEvent(_Event):
    kind: Literal["dead"] = "dead"
    dead: str = Field(min_length=1, max_length=64)
    """The node :attr:`node` took over (its kits are offline)."""


Event = KitEvent | TokenEvent | LayerEvent | LinkEvent | DeadEvent
_EVENTS: TypeAdapter[Event] = TypeAdapter(
    Annotated[Event, Field(discriminator="kind")]  # type: ignore[arg-type]
)


def encode(event: Event) -> str | None:
    """The NOTIFY payload of ``event``; a kit summary too large loses its network part; None
    if it still does not fit (the event is dropped: the dashboards catch up at the next one)."""
    text = event.model_dump_json()
    if len(text.encode()) <= MAX_PAYLOAD:
        return text
    if isinstance(event, KitEvent) and event.summary.get("network") is not None:
        return encode(event.model_copy(update={"summary": {**event.summary, "network": None}}))
    return None


def decode(payload: str) -> Event | None:
    """The event in a NOTIFY payload, None (logged) for anything else."""
    if len(payload.encode()) > MAX_PAYLOAD:
        log.warning("a cluster event of %d bytes: ignored", len(payload))
        return None
    try:
        event = _EVENTS.validate_json(payload)
    except ValidationError as exc:
        log.warning("an unreadable cluster event: ignored (%s)", exc.errors()[0]["msg"])
        return None
    if isinstance(event, KitEvent) and not isinstance(event.summary.get("id"), str):
        log.warning("a cluster kit event without a kit id: ignored")
        return None
    return event


def stale_before(now: float, dead_after_s: float = DEAD_AFTER_S) -> float:
    """Nodes whose last heartbeat is older than this are dead."""
    return now - dead_after_s


def resource_node(resource: str) -> str | None:
    """The node that minted a WHEP resource id (``<random>.<node>``), None for a single
    node's (no dot: the random part is URL-safe base64)."""
    _random, dot, node = resource.partition(".")
    return node if dot and NODE_ID.fullmatch(node) else None


def check_node_id(node_id: str) -> str:
    if not NODE_ID.fullmatch(node_id):
        raise ConfigError(
            f"node id {node_id!r}: 1 to 64 letters, digits, '.', '_' or '-' expected "
            "(starting with a letter or digit)"
        )
    return node_id


# -- a kit's state from another node (pure) -----------------------------------------------------


ROW_FIELDS = (
    "name", "school_id", "departement", "revoked", "last_seen", "offline_since", "software",
    "health", "applied_config", "config_status", "config_reason", "network", "online",
    "link_node", "session", "problems",
)  # fmt: skip
"""What a kit not linked to this node takes from its database row in a resync."""


def row_state(kit: Kit, row: dict[str, Any]) -> None:
    """A kit's link state from its row (cluster: another node may hold its link)."""
    kit.online = bool(row["online"])
    kit.link_node = row["link_node"]
    kit.offline_since = None if kit.online else kit.offline_since
    kit.session = row["session"] or "idle"
    kit.problems = tuple(str(row["problems"] or "").split())


def summary_state(kit: Kit, summary: dict[str, Any], link_node: str | None) -> None:
    """A kit's state from another node's summary (provisioning/cluster.py)."""
    kit.online = summary.get("online") is True
    kit.link_node = link_node if kit.online else None
    for name in ("last_seen", "offline_since"):
        value = summary.get(name)
        setattr(kit, name, float(value) if isinstance(value, int | float) else None)
    kit.software = str(summary.get("software", kit.software))
    kit.problems = tuple(str(p) for p in summary.get("problems") or ())
    kit.session = "live" if summary.get("session") == "live" else "idle"
    try:
        network = summary.get("network")
        kit.network = NetworkHealth.model_validate(network) if network is not None else None
    except ValidationError:
        kit.network = None
    config = summary.get("config")
    if isinstance(config, dict):
        applied = config.get("applied")
        kit.applied_config = str(applied) if applied is not None else None
        kit.config_status = str(config.get("status", ""))
        kit.config_reason = str(config.get("reason", ""))


# -- forwarded requests (pure) --------------------------------------------------------------------


class ForwardAuth:
    """Signs and checks node-to-node forwarded requests: HMAC-SHA256 with the cluster secret
    over method, path, time, the pupil's address and the sending node. Without a secret (a
    single node) every forwarded request is refused. Refusals are logged once per process (a
    scanner sending the headers must not fill the journal)."""

    def __init__(self, secret: bytes | None, clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.clock = clock
        self.refused = 0
        self._warned = False

    def _mac(self, method: str, path: str, at: str, pupil: str, node: str) -> str:
        assert self.secret is not None
        text = "\n".join((method.upper(), path, at, pupil, node))
        message = text.encode("utf-8", "surrogateescape")  # headers as aiohttp decoded them
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def sign(self, method: str, path: str, pupil: str, node: str) -> dict[str, str]:
        at = str(int(self.clock()))
        return {
            HEADER_NODE: node,
            HEADER_TIME: at,
            HEADER_PUPIL: pupil,
            HEADER_AUTH: self._mac(method, path, at, pupil, node),
        }

    @staticmethod
    def is_forwarded(headers: Mapping[str, str]) -> bool:
        return any(name in headers for name in FORWARD_HEADERS)

    def check(self, method: str, path: str, headers: Mapping[str, str]) -> str:
        """The pupil's address a forwarded request carries; :class:`Forbidden` unless it is
        signed by a node of this cluster within :data:`FORWARD_SKEW_S`."""
        reason = self._problem(method, path, headers)
        if reason is None:
            return headers[HEADER_PUPIL]
        self.refused += 1
        if not self._warned:
            self._warned = True
            log.warning("refused a forwarded request (%s); further ones are not logged", reason)
        raise Forbidden("forbidden")

    def _problem(self, method: str, path: str, headers: Mapping[str, str]) -> str | None:
        if self.secret is None:
            return "this node is not in a cluster"
        values = [headers.get(name, "") for name in FORWARD_HEADERS]
        if not all(values):
            return "headers missing"
        node, at, pupil, mac = values
        if not (at.isascii() and at.isdigit() and len(at) <= 12):
            return "bad time"
        if abs(self.clock() - int(at)) > FORWARD_SKEW_S:
            return "stale"
        expected = self._mac(method, path, at, pupil, node).encode()
        if not hmac.compare_digest(mac.encode("utf-8", "surrogateescape"), expected):
            return "bad signature"
        return None


# -- the cluster (I/O) ---------------------------------------------------------------------------


DB_ERRORS = (OSError, TimeoutError, SQLAlchemyError, asyncpg.PostgresError)
"""The database unreachable or failing: a warning each time, not a traceback."""


async def read_bounded(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole answer body, at most ``limit`` bytes (``read(n)`` returns what has arrived so
    far, not ``n`` bytes: an answer in several segments would be cut)."""
    parts: list[bytes] = []
    size = 0
    while chunk := await stream.read(limit + 1 - size):
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            raise aiohttp.ClientPayloadError("answer too large")
    return b"".join(parts)


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def listen_dsn(engine: AsyncEngine) -> str:
    """The engine's database as a plain ``postgresql://`` URL for asyncpg."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


class Cluster:
    """This node's part in the cluster: registration, heartbeat and take-over, link rows,
    events out (batched each :data:`FLUSH_S`) and in, and forwarding to other nodes."""

    def __init__(
        self,
        node_id: str,
        url: str,
        secret: bytes,
        engine: AsyncEngine,
        fleet: Fleet,
        clock: Callable[[], float] = time.time,
        forward_timeout_s: float = 20.0,
        dead_after_s: float = DEAD_AFTER_S,
    ) -> None:
        self.node_id = node_id
        self.dead_after_s = dead_after_s
        self.url = url
        self.engine = engine
        self.fleet = fleet
        self.clock = clock
        self.auth = ForwardAuth(secret, clock)
        self.forward_timeout_s = forward_timeout_s
        self.links: dict[str, bool] = {}
        """Kit id → True: its link is now here; False: it ended here (next flush)."""
        self.kit_events: dict[str, KitEvent] = {}
        self.events: list[Event] = []
        self.nodes: dict[str, str] = {}
        """Registered nodes → URL (refreshed at each heartbeat)."""
        self.sent = 0
        self.received = 0
        self.dropped = 0
        self.forwarded = 0
        self.unreachable = 0
        self.taken_over: list[str] = []
        self.beat_at = clock()
        """When this node last wrote its heartbeat (:meth:`ready`)."""
        self.listening = asyncio.Event()
        self._incoming: asyncio.Queue[Event] = asyncio.Queue(maxsize=MAX_PENDING)
        self._resync_needed = False
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._claims: set[asyncio.Task[None]] = set()

    # -- start and stop -------------------------------------------------------------------------

    async def start_up(self) -> None:
        """Before the fleet loads: take over dead nodes, register, release this node's kits of
        an earlier run (and those of no node)."""
        now = self.clock()
        await self._take_over(now)
        await store.register_node(self.engine, self.node_id, self.url, now)
        released = await store.release_on_start(self.engine, self.node_id, now)
        self.nodes = await store.live_nodes(self.engine)
        self.beat_at = now
        log.info(
            "cluster node %s (%s): %d node(s) registered, %d kit(s) marked offline at start",
            self.node_id,
            self.url,
            len(self.nodes),
            released,
        )

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="cluster-heartbeat"),
            asyncio.create_task(self._flush_loop(), name="cluster-flush"),
            asyncio.create_task(self._listen_loop(), name="cluster-listen"),
            asyncio.create_task(self._apply_loop(), name="cluster-apply"),
        ]

    async def close(self) -> None:
        """Write what is pending (links let go at shutdown), leave the cluster."""
        for task in self._tasks:
            task.cancel()
        for task in [*self._tasks, *self._claims]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.flush()
            await store.remove_node(self.engine, self.node_id)
        except Exception:
            log.exception("leaving the cluster failed (another node takes this one over)")
        if self._http is not None:
            await self._http.close()

    # -- from the fleet (sync: queued for the next flush) ---------------------------------------

    def link_state(self, kit_id: str, held: bool) -> None:
        self.links[kit_id] = held
        self._wake.set()

    def kit_changed(self, kit: Kit) -> None:
        if len(self.kit_events) >= MAX_PENDING and kit.id not in self.kit_events:
            self.dropped += 1
            return
        self.kit_events[kit.id] = KitEvent(
            node=self.node_id, summary=kit.summary(), link_node=kit.link_node
        )
        self._wake.set()

    def announce(self, event: Event) -> None:
        if len(self.events) >= MAX_PENDING:
            self.dropped += 1
            return
        self.events.append(event)
        self._wake.set()

    def claim(self, kit: Kit, digest: str) -> None:
        """A new class token: the database decides (the fleet binds it if this kit won)."""
        task = asyncio.get_running_loop().create_task(self._claim(kit, digest))
        self._claims.add(task)
        task.add_done_callback(self._claims.discard)

    async def _claim(self, kit: Kit, digest: str) -> None:
        try:
            owner = await store.claim_class_token(self.engine, digest, kit.id, self.clock())
        except Exception:
            log.exception("claiming a class token for kit %s failed", kit.id)
            owner = ""
        self.fleet.claimed(kit, digest, owner)

    # -- flush ----------------------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(FLUSH_S)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                if isinstance(exc, DB_ERRORS):
                    log.warning("writing link rows and events failed (%s): retrying", _brief(exc))
                else:
                    log.exception("writing the cluster's link rows and events failed (retrying)")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def flush(self) -> None:
        links, kit_events, events = self.links, self.kit_events, self.events
        if not (links or kit_events or events):
            return
        self.links, self.kit_events, self.events = {}, {}, []
        payloads = [p for p in map(encode, [*events, *kit_events.values()]) if p is not None]
        self.dropped += len(events) + len(kit_events) - len(payloads)  # too large to send
        held = [kit_id for kit_id, on in links.items() if on]
        released = [kit_id for kit_id, on in links.items() if not on]
        try:
            await store.write_links(
                self.engine, self.node_id, held, released, payloads, self.clock()
            )
        except BaseException:
            for kit_id, on in links.items():  # put back, newer states first
                self.links.setdefault(kit_id, on)
            for kit_id, event in kit_events.items():
                self.kit_events.setdefault(kit_id, event)
            self.events[:0] = events
            raise
        self.sent += len(payloads)

    # -- heartbeat and take-over ----------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                await self.heartbeat()
            except DB_ERRORS as exc:
                log.warning("cluster heartbeat failed: %s", _brief(exc))
            except Exception:
                log.exception("cluster heartbeat failed")

    async def heartbeat(self) -> None:
        now = self.clock()
        if not await store.node_heartbeat(self.engine, self.node_id, now):
            log.warning("node %s was taken over (silent too long): registering again", self.node_id)
            await store.register_node(self.engine, self.node_id, self.url, now)
            for kit in self.fleet.kits.values():
                if kit.link is not None:
                    self.link_state(kit.id, True)
                    self.kit_changed(kit)
        self.beat_at = now
        await self._take_over(now)
        self.nodes = await store.live_nodes(self.engine)

    def ready(self) -> str | None:
        """None when this node should get new links and requests; else why not.

        A node whose heartbeats have failed for half the take-over delay has lost PostgreSQL
        (or cannot keep up): the others will soon take its kits over, so the load balancer
        (``GET /readyz``) sends new links elsewhere. Its live links are left alone, as with
        a busy node (docs/cluster.md)."""
        silent = self.clock() - self.beat_at
        if silent > self.dead_after_s / 2:
            return f"no heartbeat written for {silent:.0f} s (database unreachable?)"
        return None

    async def _take_over(self, now: float) -> None:
        def announce(dead: str) -> str:
            payload = encode(DeadEvent(node=self.node_id, dead=dead))
            assert payload is not None
            return payload

        dead = await store.take_over_nodes(
            self.engine, self.node_id, stale_before(now, self.dead_after_s), now, announce
        )
        for node in dead:
            log.warning("node %s is silent: took it over, its kits are offline", node)
            self.taken_over.append(node)
            self.fleet.node_dead(node)

    # -- events in --------------------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        delay = 0.5
        first = True
        while True:
            try:
                connection = await asyncpg.connect(listen_dsn(self.engine), timeout=10)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("cluster events: cannot connect (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = 0.5
            try:
                await self._listen(connection, resync=not first)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("cluster events: connection lost (%s)", type(exc).__name__)
            except Exception:
                log.exception("cluster events: unexpected failure")
            finally:
                self.listening.clear()
                connection.terminate()
            first = False
            await asyncio.sleep(delay)

    async def _listen(self, connection: asyncpg.Connection, resync: bool) -> None:
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _c: lost.set())
        await connection.add_listener(CHANNEL, self._on_notify)
        if resync or self._resync_needed:
            await self.resync()  # events were missed while the connection was down
        self.listening.set()
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await lost.wait()
            if not lost.is_set():  # a dead TCP connection says nothing: ask
                async with asyncio.timeout(5.0):
                    await connection.execute("SELECT 1")
        log.warning("cluster events: connection lost (closed by the server); reopening")

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        event = decode(payload)
        if event is None or event.node == self.node_id:
            return
        try:
            self._incoming.put_nowait(event)
        except asyncio.QueueFull:
            self._resync_needed = True

    async def _apply_loop(self) -> None:
        while True:
            event = await self._incoming.get()
            try:
                await self.apply(event)
                if self._resync_needed and self._incoming.empty():
                    self._resync_needed = False
                    log.warning("cluster events fell behind: reloading the fleet's state")
                    await self.resync()
            except Exception:
                log.exception("applying a cluster event (%s) failed", event.kind)

    async def apply(self, event: Event) -> None:
        self.received += 1
        fleet = self.fleet
        if isinstance(event, KitEvent):
            kit_id = event.summary["id"]
            if kit_id not in fleet.kits and not await self._load_kit(kit_id):
                return
            await fleet.apply_summary(fleet.kits[kit_id], event.summary, event.link_node)
        elif isinstance(event, TokenEvent):
            if event.kit in fleet.kits or await self._load_kit(event.kit):
                fleet.apply_token(fleet.kits[event.kit], event.digest, event.live, event.at)
        elif isinstance(event, LinkEvent):
            kit = fleet.kits.get(event.kit)
            if kit is not None:
                fleet.moved_away(kit, event.node, event.at)
        elif isinstance(event, LayerEvent):
            overlay = await store.load_config_layer(self.engine, event.level, event.scope)
            await fleet.apply_layer(event.level, event.scope, overlay)
        elif isinstance(event, DeadEvent):
            fleet.node_dead(event.dead)

    async def _load_kit(self, kit_id: str) -> bool:
        row = await store.load_kit(self.engine, kit_id)
        if row is None:
            return False
        self.fleet.apply_row(row)
        return True

    async def resync(self) -> None:
        """Reload every kit's state (and the configuration layers) from the database."""
        for row in await store.load_kits(self.engine):
            self.fleet.apply_row(row)
        layers = await store.load_config_layers(self.engine)
        for (level, scope), overlay in layers.items():
            if self.fleet.layers.get((level, scope)) != overlay:
                await self.fleet.apply_layer(level, scope, overlay)

    # -- pupils' requests for a kit on another node -----------------------------------------------

    async def route(self, kit_id: str) -> str:
        """The URL of the node holding this kit's link; 503 (try again) when none does."""
        found = await store.kit_route(self.engine, kit_id)
        if found is None or found[0] == self.node_id:
            raise ServiceUnavailable(
                "the classroom is not reachable right now; try again soon", retry_after_s=2
            )
        return found[1]

    async def node_url(self, node: str) -> str | None:
        """The URL of a registered node (a node started since the last heartbeat is looked
        up)."""
        if node not in self.nodes:
            self.nodes = await store.live_nodes(self.engine)
        return self.nodes.get(node)

    async def learn_token(self, digest: str) -> None:
        """A pupil's token this node has not heard of: a class claimed on another node
        moments ago (its event still on the way) is read from the database."""
        fleet = self.fleet
        if digest in fleet.by_token or digest in fleet.expired_tokens:
            return
        row = await store.class_token(self.engine, digest)
        if row is None or (
            row["kit_id"] not in fleet.kits and not await self._load_kit(row["kit_id"])
        ):
            return
        kit = fleet.kits[row["kit_id"]]
        fleet.apply_token(kit, digest, row["ended_at"] is None, row["claimed_at"])

    async def forward(
        self, url: str, request: web.Request, body: bytes, pupil: str
    ) -> web.Response:
        """``request`` sent on to ``url`` (another node), signed; its answer, unchanged."""
        path = request.path
        headers = self.auth.sign(request.method, path, pupil, self.node_id)
        if request.content_type and body:
            headers["Content-Type"] = request.headers.get("Content-Type", "")
        if "X-Pupil-Key" in request.headers:  # the pupil's rejoin key (docs/whep.md)
            headers["X-Pupil-Key"] = request.headers["X-Pupil-Key"]
        if self._http is None:
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200))
        try:
            async with asyncio.timeout(self.forward_timeout_s):
                async with self._http.request(
                    request.method,
                    URL(url + request.rel_url.raw_path, encoded=True),  # as the pupil wrote it
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                ) as answer:
                    content = await read_bounded(answer.content, FORWARD_MAX_BODY)
                    passed: CIMultiDict[str] = CIMultiDict()
                    for name in PASSED_BACK:
                        for value in answer.headers.getall(name, []):
                            passed.add(name, value)
                    response = web.Response(status=answer.status, body=content, headers=passed)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self.unreachable += 1
            log.warning("forwarding %s to %s failed: %s", request.method, url, type(exc).__name__)
            raise ServiceUnavailable(
                "the classroom is not reachable right now; try again soon", retry_after_s=2
            ) from None
        self.forwarded += 1
        return response
