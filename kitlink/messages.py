"""The server link's messages, version 1: every message, validated in this one module.

Sans-I/O: this module turns bytes into validated messages and messages into text; it never
touches a socket. Which message may come when is :mod:`kitlink.rules`' table, applied by
:mod:`kitlink.connection`. The server (:mod:`provisioning.link`) and the agent
(:mod:`agent.link.client`) both stand on this package, so the two sides cannot drift apart. The
wire format is documented in ``docs/protocol.md``.

Every frame is one UTF-8 JSON object (a WebSocket text frame) with a ``type``. A frame that is
not JSON, not an object, of an unknown type, or that does not match its schema makes the receiver
close the link with :data:`CLOSE_MALFORMED` and a short reason.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from .rules import (
    BUDGET_UNIT_BYTES,
    CLOSE_MALFORMED,
    CLOSE_TOO_BIG,
    CLOSE_TOO_FAST,
    KIT_TYPES,
    MAX_MESSAGE_BYTES,
    SERVER_TYPES,
    VERSION,
    ProtocolError,
)

MAX_SDP = 64 * 1024
Text = Annotated[str, Field(max_length=200)]
Id = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
ConfigVersion = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]
NonNegative = Annotated[float, Field(ge=0)]


class _Msg(BaseModel):
    # No NaN or ±Infinity (``1e999`` parses as infinity): not JSON, stored as null, and
    # infinity in a kit's clock poisoned the server's latency figures.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# -- health ------------------------------------------------------------------------------------

DeviceState = Literal["ok", "missing", "error", "disabled"]
ClassState = Literal["waiting", "ended", "invalid", "full", "locked", "removed"]
"""Why a join link was refused (sent to the pupil page as ``X-Class-State``, docs/whep.md).
``locked`` and ``removed`` (issue 17) are sent by a kit only in answer to an offer that carried
``pupil_key``: only servers that know them send it (a server before them would refuse the
whole ``whep_answer`` and close the link)."""
PupilKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")]
"""The pupil page's rejoin key for this class (``X-Pupil-Key``, docs/whep.md)."""


class DeviceHealth(_Msg):
    state: DeviceState
    detail: Text = ""


class Devices(_Msg):
    camera: DeviceHealth
    document: DeviceHealth
    microphone: DeviceHealth


class Memory(_Msg):
    total_mb: Annotated[int, Field(ge=0)]
    available_mb: Annotated[int, Field(ge=0)]


class SessionHealth(_Msg):
    state: Literal["idle", "live"]
    viewers: Annotated[int, Field(ge=0, le=100_000)] = 0
    elapsed_s: NonNegative = 0


class StreamStats(_Msg):
    source: Id
    codec: Annotated[str, Field(max_length=16)]
    fps: NonNegative
    bitrate_kbps: NonNegative
    loss_percent: Annotated[float, Field(ge=0, le=100)]


NetworkReach = Literal["unknown", "udp", "turn-udp", "turn-tcp", "turn-tls", "none"]
"""The best way out of the school the kit found (docs/protocol.md, "Network"): ``udp`` (plain
UDP reaches the fleet's STUN/TURN server: pupils connect directly or through their own TURN
allocation), ``turn-udp`` / ``turn-tcp`` / ``turn-tls`` (only through the fleet's TURN server,
over that transport), ``none`` (nothing gets out: pupils outside the school cannot reach the
class), ``unknown`` (not probed yet, or no STUN/TURN server configured)."""
PupilPath = Annotated[str, Field(pattern=r"^(host|srflx|prflx|relay)/(udp|tcp|tls)$")]
"""How one pupil's media flows: the kit's selected candidate type / its transport."""


class NetworkHealth(_Msg):
    reach: NetworkReach = "unknown"
    turn_error: Text = ""
    """Why the last TURN allocation failed (e.g. ``bad credential``, ``TLS``, ``refused``)."""
    probed_at: NonNegative = 0
    """The kit's wall clock at the last probe (0: never)."""
    paths: Annotated[dict[PupilPath, Annotated[int, Field(ge=0)]], Field(max_length=12)] = {}
    """Pupils connected, counted by path."""


PupilCount = Annotated[int, Field(ge=0, le=100_000, strict=True)]
LayerName = Literal["high", "mid", "low", "paused"]
"""A camera's quality layer (docs/adaptation.md); ``paused``: that camera is not sent."""
QualityLevel = Literal["full", "reduced", "audio-only"]
"""What a pupil gets: every camera on its top layer, some below it, or sound only."""


class LayerCounts(_Msg):
    """Pupils on each layer of each camera; the document camera has no middle layer, and its
    ``keyframes``: the low layer's keyframes only (its last step before pausing)."""

    camera: Annotated[dict[LayerName, PupilCount], Field(max_length=4)] = {}
    document: Annotated[
        dict[Literal["high", "low", "keyframes", "paused"], PupilCount], Field(max_length=4)
    ] = {}


class PupilsHealth(_Msg):
    """The class's distribution (issue 14): how many pupils on each layer of each camera, at
    each quality level, and the worst loss any pupil's receiver reports say it had. Counts
    only pupils the kit has judged; a pupil without a layer for a camera (not configured, not
    negotiated) is not counted for it. Numbers are strict (``"3"`` or ``true`` is refused,
    not read as 3 or 1): the kit builds them, anything else is a broken kit."""

    layers: LayerCounts = LayerCounts()
    quality: Annotated[dict[QualityLevel, PupilCount], Field(max_length=3)] = {}
    worst_loss_percent: Annotated[float, Field(ge=0, le=100, strict=True)] | None = None
    """The highest ``loss_percent`` over the pupils (``null``: no pupil has reported any)."""


class ClassroomHealth(_Msg):
    """Who came into the live class (issue 17), counted: never a name (names stay on the kit
    and vanish at Stop). Counts are of events since Start (a pupil reconnecting joins again);
    ``waiting``: pupils in the waiting room now."""

    waiting_room: bool = False
    locked: bool = False
    waiting: PupilCount = 0
    knocked: PupilCount = 0
    joined: PupilCount = 0
    admitted: PupilCount = 0
    removed: PupilCount = 0
    refused: PupilCount = 0
    asked: PupilCount = 0
    spoke: PupilCount = 0
    """Turns with the floor (talk-back) since Start."""
    speaking: PupilCount = 0
    """Pupils who have the floor now."""


class HealthReport(_Msg):
    software: Annotated[str, Field(max_length=64)]
    uptime_s: NonNegative
    cpu_percent: Annotated[float, Field(ge=0, le=100 * 256)]
    load: Annotated[list[NonNegative], Field(min_length=3, max_length=3)]
    memory: Memory
    disk_free_mb: Annotated[int, Field(ge=0)]
    cpu_temp_c: float | None = None
    devices: Devices
    session: SessionHealth
    streams: Annotated[list[StreamStats], Field(max_length=16)] = []
    network: NetworkHealth | None = Field(default=None, exclude_if=lambda value: value is None)
    """Left out of the frame when absent: servers before it accept the report as it was."""
    pupils: PupilsHealth | None = Field(default=None, exclude_if=lambda value: value is None)
    """The class's distribution over layers and quality levels; left out when absent (like
    ``network``, and sent on the same condition, docs/protocol.md)."""
    classroom: ClassroomHealth | None = Field(default=None, exclude_if=lambda value: value is None)
    """The live class's admissions, counted; sent only to servers whose welcome listed
    :data:`~kitlink.rules.SERVER_FEATURE_CLASSROOM_HEALTH` (older ones refuse the field)."""

    def problems(self) -> list[str]:
        """Devices that are not ``ok`` (``disabled`` is a choice, not a problem)."""
        return [
            name
            for name in ("camera", "document", "microphone")
            if getattr(self.devices, name).state in ("missing", "error")
        ]


# -- pushed configuration ------------------------------------------------------------------------


class PushedVideo(_Msg):
    width: int | None = None
    height: int | None = None
    fps: int | None = None
    bitrate_kbps: int | None = None


class PushedMicrophone(_Msg):
    bitrate_kbps: int | None = None


class PushedIceServer(_Msg):
    urls: Annotated[list[Annotated[str, Field(max_length=300)]], Field(max_length=8)]
    username: Annotated[str, Field(max_length=200)] = ""
    credential: Annotated[str, Field(max_length=200)] = ""


class PushedWebrtc(_Msg):
    ice_servers: Annotated[list[PushedIceServer], Field(max_length=8)] | None = None


class PushedKiosk(_Msg):
    language: Annotated[str, Field(max_length=8)] | None = None
    waiting_room: bool | None = None
    """Only to kits whose hello lists :data:`~kitlink.rules.FEATURE_CLASS_CONTROL` (older kits
    refuse an unknown key): whether a class starts with its waiting room on."""


class PushedNetwork(_Msg):
    uplink_kbps: int | None = None


class PushedConfig(_Msg):
    """What the server may set on a kit. Structure only: ranges and combinations are checked by
    the agent against its own schema (:mod:`agent.config`), which can refuse with a reason."""

    camera: PushedVideo | None = None
    document: PushedVideo | None = None
    microphone: PushedMicrophone | None = None
    webrtc: PushedWebrtc | None = None
    kiosk: PushedKiosk | None = None
    network: PushedNetwork | None = None
    """Only to kits whose hello lists :data:`~kitlink.rules.FEATURE_NETWORK_CONFIG`: older kits
    refuse an unknown key (and would close the link on every push)."""

    def overlay(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def merge_layers(*layers: dict[str, Any]) -> dict[str, Any]:
    """Fleet default, then school, then kit: the most specific value wins, key by key (lists
    such as ``ice_servers`` are replaced whole)."""
    out: dict[str, Any] = {}
    for layer in layers:
        _merge_into(out, layer)
    return out


def _merge_into(target: dict[str, Any], layer: dict[str, Any]) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        elif isinstance(value, dict):
            target[key] = {}
            _merge_into(target[key], value)
        else:
            target[key] = value


def config_version(overlay: dict[str, Any]) -> str:
    """The version of an effective configuration: a hash of its canonical JSON, so the same
    settings always have the same version on both sides."""
    canonical = json.dumps(overlay, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# -- kit → server --------------------------------------------------------------------------------


class SessionInfo(_Msg):
    state: Literal["idle", "live"]
    token_sha256: Hex64 | None = None
    """SHA-256 of the join token while live: the server routes pupils by it, never sees it."""


class Hello(_Msg):
    type: Literal["hello"] = "hello"
    v: int
    kit_id: Id
    secret: Annotated[str, Field(min_length=16, max_length=128)]
    software: Annotated[str, Field(max_length=64)]
    config_version: ConfigVersion | None = None
    session: SessionInfo = SessionInfo(state="idle")
    features: Annotated[list[Id], Field(max_length=16)] = Field(
        default=[], exclude_if=lambda value: not value
    )
    """What this kit understands beyond version 1 (``ice_servers``): the server sends only
    the messages a kit said it knows."""


class Health(_Msg):
    type: Literal["health"] = "health"
    seq: Annotated[int, Field(ge=0)]
    sent_at: float
    """The kit's wall clock (seconds since the epoch) when it made the report."""
    report: HealthReport
    queued: bool = False
    """Made while the link was down and sent on reconnection: history at ``sent_at``, not the
    kit's current state."""
    dropped: Annotated[int, Field(ge=0, le=10_000_000)] = 0
    """Reports the kit made but could not keep (its queue is bounded) before this one."""


class ConfigAck(_Msg):
    type: Literal["config_ack"] = "config_ack"
    version: ConfigVersion
    status: Literal["applied", "deferred", "refused"]
    reason: Annotated[str, Field(max_length=500)] = ""


class Session(_Msg):
    type: Literal["session"] = "session"
    session: SessionInfo


class WhepAnswer(_Msg):
    type: Literal["whep_answer"] = "whep_answer"
    req: Id
    status: Annotated[int, Field(ge=200, le=599)]
    resource: Id | None = None
    sdp: Annotated[str, Field(max_length=MAX_SDP)] | None = None
    error: Text = ""
    class_state: ClassState | None = None


class WhepDeleted(_Msg):
    type: Literal["whep_deleted"] = "whep_deleted"
    req: Id
    status: Annotated[int, Field(ge=200, le=599)]
    error: Text = ""


AnyKitMessage = Hello | Health | ConfigAck | Session | WhepAnswer | WhepDeleted
"""Every message a kit sends."""
KitMessage = Annotated[AnyKitMessage, Field(discriminator="type")]

# -- server → kit --------------------------------------------------------------------------------


class Welcome(_Msg):
    type: Literal["welcome"] = "welcome"
    v: int = VERSION
    kit_id: Id
    name: Text
    health_interval_s: Annotated[float, Field(gt=0, le=300)]
    server_time: float
    features: Annotated[list[Id], Field(max_length=16)] = Field(
        default=[], exclude_if=lambda value: not value
    )
    """What this server understands beyond version 1 (``classroom_health``). Sent only to kits
    whose hello listed :data:`~kitlink.rules.FEATURE_CLASS_CONTROL`: older kits refuse an
    unknown field, and the field is left out of the frame when empty."""


class PushConfig(_Msg):
    type: Literal["config"] = "config"
    version: ConfigVersion
    config: PushedConfig


class IceServers(_Msg):
    """STUN/TURN servers for the kit, with credentials minted for it (coturn's REST scheme):
    sent after ``welcome`` and when a class starts, renewed before ``expires_at``. The kit
    uses them instead of any it had; an empty list means none."""

    type: Literal["ice_servers"] = "ice_servers"
    ice_servers: Annotated[list[PushedIceServer], Field(max_length=8)]
    expires_at: NonNegative
    """The server's wall clock when these credentials stop working."""


class Stored(_Msg):
    """Every report of this kit made at or before ``upto`` (its ``sent_at``) is committed to
    the database. Sent only to kits whose hello listed ``stored_ack``, after each write."""

    type: Literal["stored"] = "stored"
    upto: float


class WhepOffer(_Msg):
    type: Literal["whep_offer"] = "whep_offer"
    req: Id
    token: Annotated[str, Field(min_length=1, max_length=200)]
    sdp: Annotated[str, Field(max_length=MAX_SDP)]
    pupil_key: PupilKey | None = Field(default=None, exclude_if=lambda value: value is None)
    """The page's rejoin key; only to kits whose hello lists
    :data:`~kitlink.rules.FEATURE_CLASS_CONTROL` (older kits refuse an unknown field)."""


class WhepDelete(_Msg):
    type: Literal["whep_delete"] = "whep_delete"
    req: Id
    resource: Id


AnyServerMessage = Welcome | PushConfig | IceServers | Stored | WhepOffer | WhepDelete
"""Every message a server sends."""
ServerMessage = Annotated[AnyServerMessage, Field(discriminator="type")]

_KIT = TypeAdapter(KitMessage)
_SERVER = TypeAdapter(ServerMessage)


def parse_kit_message(data: str | bytes) -> AnyKitMessage:
    """A frame the server received; raises :class:`ProtocolError`."""
    return _parse(_KIT, KIT_TYPES, data)  # type: ignore[no-any-return]


def parse_server_message(data: str | bytes) -> AnyServerMessage:
    """A frame the agent received; raises :class:`ProtocolError`."""
    return _parse(_SERVER, SERVER_TYPES, data)  # type: ignore[no-any-return]


def _parse(adapter: TypeAdapter[Any], known: frozenset[str], data: str | bytes) -> Any:
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(CLOSE_TOO_BIG, "message too big")
    try:
        return adapter.validate_json(data)
    except ValidationError as exc:
        raise ProtocolError(CLOSE_MALFORMED, _describe(exc, known)) from None


def _describe(exc: ValidationError, known: frozenset[str]) -> str:
    """A short, safe reason: which field is wrong (no values are echoed back)."""
    first = exc.errors(include_input=False, include_url=False)[0]
    kind = first["type"]
    if kind == "json_invalid":
        return "not valid JSON"
    if not first["loc"] and kind not in ("union_tag_not_found", "union_tag_invalid"):
        return "not a JSON object"
    if kind == "union_tag_not_found":
        return "no message type"
    if kind == "union_tag_invalid":
        return f"unknown message type (expected one of {', '.join(sorted(known))})"
    where = ".".join(str(p) for p in first["loc"][1:]) or "message"
    return f"invalid {where}: {first['msg']}"[:120]


def encode(message: BaseModel) -> str:
    """The text frame for ``message`` (compact JSON, defaults included, except a live health
    report's ``queued``/``dropped``: its frame stays what servers before them accept)."""
    if isinstance(message, Health) and not message.queued and not message.dropped:
        return message.model_dump_json(exclude={"queued", "dropped"})
    return message.model_dump_json()


class MessageBudget:
    """How many frames a kit may send: a token bucket of ``burst`` units refilled at ``rate``
    units per second, a frame costing one unit per started :data:`BUDGET_UNIT_BYTES`.

    A kit in good health sends a report every 10 s; its largest bursts are the reports queued
    while the link was down (at most 360, sent at once on reconnect) and one ``whep_answer``
    per pupil joining. The defaults leave room for both and stop a kit (or a stolen credential)
    that floods the server, which would otherwise parse and store everything it is sent.
    Pure logic: the caller passes the clock.
    """

    __slots__ = ("_at", "_level", "burst", "rate")

    def __init__(self, now: float, burst: float = 600.0, rate: float = 10.0) -> None:
        self.burst = burst
        self.rate = rate
        self._level = burst
        self._at = now

    def spend(self, size: int, now: float) -> None:
        """Account for one frame of ``size`` bytes; raises :class:`ProtocolError` when the
        budget is spent (the link is then closed with :data:`CLOSE_TOO_FAST`)."""
        self._level = min(self.burst, self._level + (now - self._at) * self.rate)
        self._at = now
        self._level -= 1 + size // BUDGET_UNIT_BYTES
        if self._level < 0:
            raise ProtocolError(CLOSE_TOO_FAST, "too many messages")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
