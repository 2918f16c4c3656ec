"""The agent's configuration: one validated schema, loaded once at start-up.

The file is TOML (see ``agent/example-config.toml``). Unknown keys are errors, so a typo never
silently falls back to a default. Values are passed down to the parts that need them; nothing
reads the file again later.
"""

from __future__ import annotations

import ipaddress
import tomllib
import urllib.parse
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kitsys.httpguard import Limits

from .errors import ConfigError

SYNTHETIC = "synthetic"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpConfig(_Strict):
    listen: str = "0.0.0.0:8080"
    """HOST:PORT the agent's HTTP server binds to (kiosk, API, WHEP, pupil page)."""
    public_url: str = ""
    """Base URL put in join links, e.g. ``http://192.168.1.20:8080``; empty = guessed."""
    header_timeout_s: Annotated[float, Field(ge=1.0, le=300.0)] = 10.0
    """A request's headers must be complete within this of the connection or of the previous
    response (a slowloris sending a byte every few seconds is closed); docs/systemd.md."""
    body_timeout_s: Annotated[float, Field(ge=1.0, le=300.0)] = 30.0
    """A request's body (an SDP offer, a kiosk command) must arrive within this."""
    idle_timeout_s: Annotated[float, Field(ge=1.0, le=3600.0)] = 15.0
    """A keep-alive connection that sends nothing for this long is closed."""
    max_connections: Annotated[int, Field(ge=16, le=60_000)] = 512
    """Open connections from all LAN hosts together (the kit itself is not counted)."""
    max_connections_per_address: Annotated[int, Field(ge=4, le=60_000)] = 32
    """Open connections from one address (an IPv6 /64); more are reset at once."""

    def limits(self) -> Limits:
        return Limits(
            header_timeout_s=self.header_timeout_s,
            body_timeout_s=self.body_timeout_s,
            idle_timeout_s=self.idle_timeout_s,
            max_connections=self.max_connections,
            max_per_peer=self.max_connections_per_address,
        )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return value.rstrip("/")


class VideoSourceConfig(_Strict):
    device: str = SYNTHETIC
    """``synthetic``, a V4L2 path (``/dev/video0``) or index (``0``), an RTSP URL, a video
    file (looped), or empty to disable this camera."""
    width: Annotated[int, Field(ge=160, le=3840)] = 1280
    height: Annotated[int, Field(ge=120, le=2160)] = 720
    fps: Annotated[int, Field(ge=1, le=60)] = 30
    bitrate_kbps: Annotated[int, Field(ge=100, le=20_000)] = 2000

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even (4:2:0 video)")
        return value


def _document_defaults() -> VideoSourceConfig:
    return VideoSourceConfig(width=1920, height=1080, fps=15, bitrate_kbps=2000)


class MicrophoneConfig(_Strict):
    device: str = SYNTHETIC
    """``synthetic`` (a tone), ``default``, a sounddevice name or index, or empty to disable."""
    bitrate_kbps: Annotated[int, Field(ge=16, le=128)] = 48


class SpeakerConfig(_Strict):
    device: str = "default"
    """Where a pupil given the floor is heard in the room: ``default``, a sounddevice name or
    index (see ``kit-agent devices``), ``null`` (played nowhere, for tests and demos), or empty
    to disable talk-back."""


class EncoderConfig(_Strict):
    h264_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = (
        "ultrafast"
    )
    """libx264 preset. ``ultrafast`` keeps both cameras under a third of a core each on the kit
    and text stays legible at 2 Mbit/s (see docs/PERFORMANCE.md); slower presets cost more CPU
    for little visible gain on classroom content."""
    keyframe_interval_s: Annotated[float, Field(gt=0.2, le=2.0)] = 2.0
    keyframe_min_interval_s: Annotated[float, Field(ge=0.0, le=5.0)] = 0.5
    """Forced keyframes (joins, PLI/FIR) per source are at most this often."""
    keyframe_join_interval_s: Annotated[float, Field(ge=0.0, le=5.0)] = 0.2
    """A joining pupil's first keyframe is forced at most this long after the layer's last
    (one for every pupil joining meanwhile; docs/adaptation.md, "A class starting")."""
    threads: Annotated[int, Field(ge=0, le=16)] = 1
    """Encoder threads per video source (0 = chosen by the encoder). One thread per source is
    the cheapest in total CPU on a 2-core kit: the two sources already run in parallel."""


class IceServerConfig(_Strict):
    urls: list[str]
    username: str = ""
    credential: str = ""

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one URL")
        for url in value:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ValueError(f"{url!r} is not a stun:, turn: or turns: URL")
            if any(c in url for c in '<>" ') or not url.isprintable():
                raise ValueError(f"{url!r} has a space, quote or angle bracket")
        return value

    @field_validator("username", "credential")
    @classmethod
    def _check_text(cls, value: str) -> str:
        if not value.isprintable() or len(value) > 200:
            raise ValueError("must be printable text of at most 200 characters")
        return value


class WebRtcConfig(_Strict):
    ice_servers: list[IceServerConfig] = []
    """STUN/TURN servers. Empty means none: the kit contacts no server it was not told of."""
    host_addresses: list[str] = []
    """Restrict ICE host candidates to these local addresses; empty = every interface."""
    max_viewers: Annotated[int, Field(ge=1, le=500)] = 60
    viewer_queue_packets: Annotated[int, Field(ge=4, le=1000)] = 60
    """Bound of each viewer's video queue; on overflow it drops to the next keyframe."""
    connect_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    """A viewer not connected this long after its answer is dropped. Pupils connect in 1–2 s
    (through NATs and TURN included, issue 12); 30 s let a burst of offers hold a class."""
    max_connecting: Annotated[int, Field(ge=1, le=500)] = 10
    """Viewers answered but not yet connected, at once (half-open). A join over it waits up to
    3 s for one to connect or go, then gets 503 + ``Retry-After``."""
    max_connecting_per_address: Annotated[int, Field(ge=1, le=500)] = 3
    """Half-open viewers from one LAN address (an IPv6 /64); more get 429 at once. The kit
    itself and pupils relayed by the server are counted in ``max_connecting`` only."""
    whep_burst: Annotated[int, Field(ge=1, le=1000)] = 10
    whep_per_minute: Annotated[float, Field(gt=0, le=6000)] = 20.0
    """``POST /whep`` per LAN address: ``whep_burst`` at once, then this many a minute (a token
    bucket); more get 429 + ``Retry-After``. The kit itself (loopback) is not limited."""
    pupil_ice_servers: list[IceServerConfig] = []
    """STUN/TURN servers handed to pupils in WHEP ``Link: rel="ice-server"`` headers (a LAN-only
    kit; pupils joining through the server get the server's). Never the kit's own credentials."""
    probe_interval_s: Annotated[float, Field(ge=30, le=86_400)] = 600.0
    """How often the kit checks which way out of the school works (docs/protocol.md, "Network");
    also at start-up, at each link welcome and whenever its ICE servers change."""
    probe_timeout_s: Annotated[float, Field(ge=0.5, le=30)] = 3.0
    """Bound of each reachability probe (STUN binding, TURN allocation); all run at once. Also
    the longest a join made during the first probe of new servers waits for its decision."""

    @field_validator("host_addresses")
    @classmethod
    def _check_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            ipaddress.ip_address(address)
        return value


class ServerLinkConfig(_Strict):
    """The link to the provisioning server (docs/provisioning.md). It is used only once the kit
    is enrolled (``kit-agent enroll``), which stores the server and the kit's credential in
    ``state_dir``."""

    enabled: bool = True
    relay_join_links: bool = True
    """Join links point to the server (reachable from home); false keeps LAN-only links."""
    reconnect_min_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    reconnect_max_s: Annotated[float, Field(ge=1, le=3600)] = 20.0
    """The redial backoff's cap: with full jitter, every kit is back within about this long
    after the server returns, however long it was down (issue 16: ≤ 30 s asked; 15,000 kits
    over 20 s is ~750 connections a second, which one server took at ~1,000 a second)."""
    keepalive_s: Annotated[float, Field(ge=5, le=300)] = 30.0
    """WebSocket ping interval: finds a dead server or NAT mapping between health reports."""
    proxy: str = ""
    """An explicit HTTP proxy for the link and enrollment (``http://host:port``, as in
    ``https_proxy``), for schools that let web traffic out only through one. Empty: direct (the
    environment's ``https_proxy`` is ignored: the kit contacts only what its config names)."""

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, value: str) -> str:
        if not value:
            return value
        parsed = urllib.parse.urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("proxy must be http://HOST:PORT or https://HOST:PORT")
        if parsed.path not in ("", "/") or parsed.query or parsed.fragment:
            raise ValueError("proxy must be http://HOST:PORT (no path)")
        try:
            port = parsed.port
        except ValueError as exc:
            raise ValueError(f"proxy port: {exc}") from None
        if port is None:
            raise ValueError("proxy must name its port (http://HOST:PORT)")
        return value.rstrip("/")


MIN_UPLINK_KBPS = 256
"""The smallest non-zero uplink budget: below it not even one pupil's lowest video layer
(~150 kbit/s) and sound (~50 kbit/s) fit with headroom, and a value like ``20`` is almost
always megabits typed as kilobits."""


class NetworkConfig(_Strict):
    uplink_kbps: Annotated[int, Field(ge=0, le=10_000_000, strict=True)] = 0
    """The school's upload capacity the class may use, in kbit/s: the kit allots quality layers
    so that all its pupils together stay under it (docs/adaptation.md, "The school's uplink").
    0 = no budget (each pupil is limited by its own link only)."""

    @field_validator("uplink_kbps")
    @classmethod
    def _check_uplink(cls, value: int) -> int:
        if 0 < value < MIN_UPLINK_KBPS:
            raise ValueError(
                f"must be 0 (no budget) or at least {MIN_UPLINK_KBPS} kbit/s "
                "(the unit is kbit/s: 20 Mbit/s is 20000)"
            )
        return value


class KioskConfig(_Strict):
    language: Literal["fr", "en"] = "fr"
    """Language the kiosk starts in (the teacher can switch on screen)."""
    waiting_room: bool = False
    """Whether a class starts with its waiting room on: pupils wait, with no picture or sound,
    until the teacher lets them in (the teacher can switch it on the kiosk, per class)."""
    floor_max: Annotated[int, Field(ge=1, le=2)] = 1
    """How many remote pupils may have the floor (speak to the class) at once."""


class AgentConfig(_Strict):
    http: HttpConfig = HttpConfig()
    kiosk: KioskConfig = KioskConfig()
    camera: VideoSourceConfig = VideoSourceConfig()
    document: VideoSourceConfig = Field(default_factory=_document_defaults)
    microphone: MicrophoneConfig = MicrophoneConfig()
    speaker: SpeakerConfig = SpeakerConfig()
    encoder: EncoderConfig = EncoderConfig()
    webrtc: WebRtcConfig = WebRtcConfig()
    network: NetworkConfig = NetworkConfig()
    server: ServerLinkConfig = ServerLinkConfig()
    state_dir: str = ""
    """Where the agent keeps its state; empty = not persisted."""


def parse_host_port(value: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` too) and validate the port."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{value!r} is not HOST:PORT")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range")
    return host.strip("[]") or "0.0.0.0", port


def load_config(path: Path) -> AgentConfig:
    """Read and validate a TOML config file; raise :class:`ConfigError` with a readable reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc.reason}") from exc
    return parse_config(text, str(path))


def parse_config(text: str, origin: str = "config") -> AgentConfig:
    """Validate the text of a TOML config; :class:`ConfigError` names ``origin``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{origin} is not valid TOML: {exc}") from exc
    return config_from_dict(data, origin=origin)


def config_from_dict(data: dict[str, object], origin: str = "config") -> AgentConfig:
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{origin}: {problems}") from exc
