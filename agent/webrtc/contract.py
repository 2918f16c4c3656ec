"""Every aiortc and aioice name the agent relies on beyond their public API, checked at start-up.

The lean send path (``rtpsend``) replaces three methods of aiortc's ``RTCRtpSender``, wraps a
fourth (its RTCP handler, for the pupil's feedback) and reads or writes eleven of its
name-mangled attributes; it takes aioice's nominated pair, the DTLS transport's SRTP session,
and sends through aioice's ``StunProtocol`` (``udp``: GSO on the asyncio
transport's socket); ``ice`` replaces ``aioice.ice.get_host_addresses``; ``viewer`` reads the
nominated pair for a pupil's path and replaces a receiver's audio jitter buffer (talk-back);
``feedback`` reads aiortc's parsed receiver reports and
REMB; ``reach``, ``sdp`` and ``packetize`` use functions and
classes of submodules that aiortc does not export. None of that is covered by their version
numbers: a release that renames ``_run_rtp`` or turns an attribute into a property still
installs, and the break used to show only at a pupil's first packet, as a logged exception and
a black picture.

:data:`CONTRACT` declares each of those names with its kind (module, class, function, coroutine
function, method, coroutine method, class method, property, instance attribute, constant).
:func:`check` resolves them all once, building one sample of each class whose instance
attributes we use (a sender on an unconnected DTLS/ICE transport, an aioice connection, a
candidate pair; ~6 ms, one loopback UDP socket opened and closed, nothing sent), checks that
aiortc's own code still calls the methods we replace (``Name.uses``), and returns what is absent
or has changed kind. ``kit-agent run`` and ``demo`` call :func:`refusal` before
anything else and exit with status 3 and that message (stderr and the journal) if there is any.
Nothing here runs on the per-packet path.

This module imports only the standard library at import time, so that it can report on an
aiortc that no longer imports.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata
from typing import Any

SUPPORTED = {"aiortc": "1.16", "aioice": "0.13"}
"""The minor versions the contract was written and tested against (pinned in pyproject.toml)."""


class Kind(StrEnum):
    MODULE = "module"
    CLASS = "class"
    FUNCTION = "function"
    COROUTINE_FUNCTION = "coroutine function"
    METHOD = "method"
    COROUTINE_METHOD = "coroutine method"
    CLASS_METHOD = "class method"
    PROPERTY = "property"
    ATTRIBUTE = "instance attribute"
    CONSTANT = "constant"


@dataclass(frozen=True)
class Name:
    """``module`` then ``path``: ``name``, ``Class.name`` (looked up on the class, statically)
    or ``Class().name`` (an attribute every instance has, looked up on a sample)."""

    module: str
    path: str
    kind: Kind
    used_by: str
    uses: str = ""
    """A name its code must refer to: aiortc must still call the methods we replace."""

    def __str__(self) -> str:
        return f"{self.module}.{self.path}"

    @property
    def expected(self) -> str:
        return f"{self.kind} using {self.uses}" if self.uses else str(self.kind)


def _names(module: str, used_by: str, *entries: tuple[str, Kind]) -> list[Name]:
    return [Name(module, path, kind, used_by) for path, kind in entries]


def _callers(module: str, *entries: tuple[str, Kind, str]) -> list[Name]:
    return [Name(module, path, kind, "rtpsend", uses) for path, kind, uses in entries]


K = Kind
_SENDER_FIELDS = (  # RTCRtpSender's private fields rtpsend reads or writes (rtpsend._get/_set)
    "mid",
    "rtp_header_extensions_map",
    "rtp_started",
    "rtp_exited",
    "ntp_timestamp",
    "rtp_timestamp",
    "octet_count",
    "packet_count",
    "rtx_payload_type",
    "rtx_sequence_number",
    "rtt",
)

CONTRACT: tuple[Name, ...] = (
    *_names(
        "aiortc.rtcrtpsender",
        "rtpsend",
        ("RTCRtpSender", K.CLASS),
        ("RTCRtpSender.transport", K.PROPERTY),
        ("RTCRtpSender._run_rtp", K.COROUTINE_METHOD),
        ("RTCRtpSender._retransmit", K.COROUTINE_METHOD),
        ("RTCRtpSender._send_keyframe", K.METHOD),
        ("RTCRtpSender()._stream_id", K.ATTRIBUTE),
        ("RTCRtpSender()._ssrc", K.ATTRIBUTE),
        ("RTCRtpSender()._rtx_ssrc", K.ATTRIBUTE),
        *((f"RTCRtpSender()._RTCRtpSender__{field}", K.ATTRIBUTE) for field in _SENDER_FIELDS),
    ),
    *_callers(  # what we replace on a sender is only worth it if aiortc still calls it
        "aiortc.rtcrtpsender",
        ("RTCRtpSender.send", K.COROUTINE_METHOD, "_run_rtp"),
        ("RTCRtpSender._handle_rtcp_packet", K.COROUTINE_METHOD, "_retransmit"),
        ("RTCRtpSender._handle_rtcp_packet", K.COROUTINE_METHOD, "_send_keyframe"),
    ),
    *_callers(  # rtpsend wraps a sender's RTCP handler: the DTLS transport must still call it
        "aiortc.rtcdtlstransport",
        ("RTCDtlsTransport._handle_rtcp_data", K.COROUTINE_METHOD, "_handle_rtcp_packet"),
    ),
    *_callers(
        "aiortc.rtcpeerconnection",
        ("create_media_description_for_transceiver", K.FUNCTION, "_stream_id"),
    ),
    *_names(
        "aiortc.rtcdtlstransport",
        "rtpsend, viewer",
        ("RTCDtlsTransport.state", K.PROPERTY),
        ("RTCDtlsTransport.transport", K.PROPERTY),
        ("RTCDtlsTransport._send_rtp", K.COROUTINE_METHOD),
        ("RTCDtlsTransport()._tx_srtp", K.ATTRIBUTE),
    ),
    *_names("pylibsrtp", "rtpsend", ("Session.protect", K.METHOD)),
    *_names(
        "aiortc.rtcicetransport", "rtpsend, viewer", ("RTCIceTransport()._connection", K.ATTRIBUTE)
    ),
    *_names("aiortc.rtcicetransport", "reach", ("parse_stun_turn_uri", K.FUNCTION)),
    *_names(
        "aioice.ice",
        "rtpsend, udp, viewer, ice",
        ("get_host_addresses", K.FUNCTION),
        ("Connection()._nominated", K.ATTRIBUTE),
        ("Connection().turn_ssl", K.ATTRIBUTE),
        ("Connection().turn_transport", K.ATTRIBUTE),
        ("CandidatePair().protocol", K.ATTRIBUTE),
        ("CandidatePair().remote_candidate", K.ATTRIBUTE),
        ("CandidatePair.remote_addr", K.PROPERTY),
        ("CandidatePair.local_candidate", K.PROPERTY),
        ("StunProtocol", K.CLASS),
        ("StunProtocol.send_data", K.COROUTINE_METHOD),
        ("StunProtocol().transport", K.ATTRIBUTE),
    ),
    *_names("aioice.candidate", "viewer", ("Candidate().type", K.ATTRIBUTE)),
    *_names(
        "asyncio.selector_events",
        "udp",
        ("_SelectorDatagramTransport()._sock", K.ATTRIBUTE),
    ),
    *_names(
        "aiortc.rtp",
        "rtpsend",
        ("RtpPacket", K.CLASS),
        ("RtpPacket.serialize", K.METHOD),
        ("RtpPacket.parse", K.CLASS_METHOD),
        ("RtpPacket().ssrc", K.ATTRIBUTE),
        ("RtpPacket().extensions", K.ATTRIBUTE),
        ("HeaderExtensions().mid", K.ATTRIBUTE),
        ("HeaderExtensions().abs_send_time", K.ATTRIBUTE),
        ("wrap_rtx", K.FUNCTION),
    ),
    *_names(
        "aiortc.rtp",
        "feedback",
        ("RtcpRrPacket", K.CLASS),
        ("RtcpSrPacket", K.CLASS),
        ("RtcpPsfbPacket", K.CLASS),
        ("RTCP_PSFB_APP", K.CONSTANT),
        ("unpack_remb_fci", K.FUNCTION),
        ("RtcpRrPacket().reports", K.ATTRIBUTE),
        ("RtcpPsfbPacket().fmt", K.ATTRIBUTE),
        ("RtcpPsfbPacket().fci", K.ATTRIBUTE),
        *(
            (f"RtcpReceiverInfo().{field}", K.ATTRIBUTE)
            for field in ("ssrc", "fraction_lost", "packets_lost", "highest_sequence")
        ),
    ),
    *_names(  # talk-back: the pupil's voice decoded without aiortc's 80 ms of prefetch
        "aiortc.rtcrtpreceiver",
        "viewer",
        ("RTCRtpReceiver()._RTCRtpReceiver__jitter_buffer", K.ATTRIBUTE),
    ),
    *_names("aiortc.jitterbuffer", "viewer", ("JitterBuffer", K.CLASS)),
    *_names("aiortc.clock", "rtpsend", ("current_ntp_time", K.FUNCTION)),
    *_names("aiortc.mediastreams", "rtpsend, tracks", ("MediaStreamError", K.CLASS)),
    *_names("aiortc.codecs.h264", "packetize", ("H264Encoder.pack", K.METHOD)),
    *_names("aiortc.codecs.vpx", "packetize", ("Vp8Encoder.pack", K.METHOD)),
    *_names(
        "aiortc.sdp",
        "sdp, viewer",
        ("SessionDescription.parse", K.CLASS_METHOD),
        ("candidate_from_sdp", K.FUNCTION),
    ),
    *_names(
        "aioice.stun",
        "reach",
        ("Message", K.CLASS),
        ("parse_message", K.FUNCTION),
        ("Method", K.CLASS),
        ("Class", K.CLASS),
        ("TransactionFailed", K.CLASS),
        ("TransactionTimeout", K.CLASS),
    ),
    *_names(
        "aioice.turn",
        "reach",
        ("DEFAULT_CHANNEL_REFRESH_TIME", K.CONSTANT),
        ("TurnClientUdpProtocol.connect", K.COROUTINE_METHOD),
        ("TurnClientUdpProtocol.delete", K.COROUTINE_METHOD),
        ("TurnClientTcpProtocol.connect", K.COROUTINE_METHOD),
        ("TurnClientTcpProtocol.delete", K.COROUTINE_METHOD),
    ),
)


@dataclass(frozen=True)
class Breach:
    """One name that is absent or not of the declared kind (``found``: what is there)."""

    name: Name
    found: str

    def __str__(self) -> str:
        name = self.name
        return f"{name}: expected {name.expected}, found {self.found} (used by {name.used_by})"


@dataclass(frozen=True)
class _Unbuilt:
    """A sample that could not be built: its attributes cannot be checked."""

    reason: str


def check(contract: tuple[Name, ...] = CONTRACT) -> list[Breach]:
    """Every name of ``contract`` that the installed libraries do not provide as declared."""
    wanted = {(n.module, n.path.split("()", 1)[0]) for n in contract if "()." in n.path}
    samples = _samples(wanted)
    breaches = []
    for name in contract:
        found = _kind_of(name, samples)
        if found == name.kind and name.uses and name.uses not in _code_names(name):
            found = f"{found} that no longer uses {name.uses}"
        if found != name.kind:
            breaches.append(Breach(name, found or "nothing"))
    return breaches


def refusal(contract: tuple[Name, ...] = CONTRACT) -> str | None:
    """The message the agent refuses to start with, or None when the contract holds."""
    breaches = check(contract)
    if not breaches:
        return None
    lines = [
        "unsupported aiortc/aioice: the agent relies on names these versions do not provide "
        f"(installed: {installed_versions()}; supported: {supported_versions()})",
        *_describe(breaches),
        "install the supported versions in the agent's virtual environment (pyproject.toml "
        "pins them; systemd/install-kit.sh does it)",
    ]
    return "\n".join(lines)


def _describe(breaches: list[Breach]) -> list[str]:
    """One line per breach; the attributes of a sample that could not be built, in one."""
    lines: list[str] = []
    unbuilt: dict[str, list[str]] = {}
    for breach in breaches:
        if breach.found.startswith("no sample"):
            attribute = breach.name.path.split("().", 1)[1]
            unbuilt.setdefault(breach.found, []).append(attribute)
        else:
            lines.append(f"  {breach}")
    for found, attributes in unbuilt.items():
        lines.append(f"  {found}: cannot check {', '.join(attributes)}")
    return lines


def supported_versions() -> str:
    return ", ".join(f"{package} {minor}.x" for package, minor in SUPPORTED.items())


def installed_versions() -> str:
    found = []
    for package in SUPPORTED:
        try:
            found.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            found.append(f"{package} not installed")
    return ", ".join(found)


def _kind_of(name: Name, samples: dict[tuple[str, str], Any]) -> str | None:
    try:
        module = importlib.import_module(name.module)
    except ImportError:
        return None
    if "()." in name.path:
        class_name, attribute = name.path.split("().", 1)
        sample = samples.get((name.module, class_name))
        if isinstance(sample, _Unbuilt):
            return f"no sample ({name.module}.{class_name}() failed: {sample.reason})"
        if sample is None:
            return None
        if attribute in getattr(sample, "__dict__", ()):
            return Kind.ATTRIBUTE
        try:  # what the class has instead (a property, say), for the message
            return _classify(inspect.getattr_static(type(sample), attribute), on_class=True)
        except AttributeError:
            return None
    owner: Any = module
    *parents, attribute = name.path.split(".")
    try:
        for parent in parents:
            owner = getattr(owner, parent)
        raw = inspect.getattr_static(owner, attribute)
    except AttributeError:
        return None
    return _classify(raw, on_class=isinstance(owner, type))


def _code_names(name: Name) -> set[str]:
    """Every name the code of ``name`` (a function or method) and its nested code refer to."""
    owner: Any = importlib.import_module(name.module)
    for part in name.path.split("."):
        owner = inspect.getattr_static(owner, part)
    codes = [owner.__code__]
    names: set[str] = set()
    while codes:
        code = codes.pop()
        names.update(code.co_names)
        codes.extend(c for c in code.co_consts if inspect.iscode(c))
    return names


def _classify(raw: Any, on_class: bool) -> str:
    if isinstance(raw, property):
        return Kind.PROPERTY
    if isinstance(raw, classmethod):
        return Kind.CLASS_METHOD
    if isinstance(raw, staticmethod):
        raw = raw.__func__
        on_class = False
    if inspect.ismodule(raw):
        return Kind.MODULE
    if inspect.isclass(raw):
        return Kind.CLASS
    if inspect.iscoroutinefunction(raw):
        return Kind.COROUTINE_METHOD if on_class else Kind.COROUTINE_FUNCTION
    if inspect.isfunction(raw) or inspect.isbuiltin(raw) or inspect.ismethoddescriptor(raw):
        return Kind.METHOD if on_class else Kind.FUNCTION
    if callable(raw):
        return "callable object"
    return Kind.CONSTANT


def _samples(wanted: set[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    """One instance of each class whose instance attributes the contract names, built on a
    private event loop (aiortc's constructors want one); a class that cannot be built is left
    out, so its attributes are reported absent."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(_build_samples(wanted))
    finally:
        loop.close()


async def _build_samples(wanted: set[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    samples: dict[tuple[str, str], Any] = {}
    try:
        for key, build in _FACTORIES.items():
            if key not in wanted:
                continue
            try:
                samples[key] = build(udp)
            except Exception as exc:  # its attributes are reported unverifiable
                samples[key] = _Unbuilt(f"{type(exc).__name__}: {exc}"[:120])
    finally:
        udp.close()
        await asyncio.sleep(0)  # let the transport close its socket
    return samples


def _sender_chain() -> tuple[Any, Any, Any]:
    from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceGatherer, RTCIceTransport
    from aiortc.rtcrtpsender import RTCRtpSender

    ice = RTCIceTransport(RTCIceGatherer(iceServers=[]))
    dtls = RTCDtlsTransport(ice, [RTCCertificate.generateCertificate()])
    return RTCRtpSender("video", dtls), dtls, ice


def _receiver() -> Any:
    from aiortc.rtcrtpreceiver import RTCRtpReceiver

    return RTCRtpReceiver("audio", _sender_chain()[1])


def _connection() -> Any:
    from aioice.ice import Connection

    return Connection(ice_controlling=False)


def _stun_protocol(udp: asyncio.DatagramTransport) -> Any:
    from aioice.ice import StunProtocol

    protocol = StunProtocol(_connection())
    protocol.connection_made(udp)
    return protocol


def _candidate() -> Any:
    from aioice.candidate import Candidate

    return Candidate("1", 1, "udp", 1, "192.0.2.1", 9, "host")


def _candidate_pair(udp: asyncio.DatagramTransport) -> Any:
    from aioice.ice import CandidatePair

    return CandidatePair(_stun_protocol(udp), _candidate())


def _rtp_packet() -> Any:
    from aiortc.rtp import RtpPacket

    return RtpPacket()


def _header_extensions() -> Any:
    from aiortc.rtp import HeaderExtensions

    return HeaderExtensions()


def _receiver_info() -> Any:
    from aiortc.rtp import RtcpReceiverInfo

    return RtcpReceiverInfo(
        ssrc=1, fraction_lost=0, packets_lost=0, highest_sequence=0, jitter=0, lsr=0, dlsr=0
    )


def _rr_packet() -> Any:
    from aiortc.rtp import RtcpRrPacket

    return RtcpRrPacket(ssrc=1, reports=[_receiver_info()])


def _psfb_packet() -> Any:
    from aiortc.rtp import RtcpPsfbPacket

    return RtcpPsfbPacket(fmt=15, ssrc=1, media_ssrc=0)


Factory = Callable[[asyncio.DatagramTransport], Any]
_FACTORIES: dict[tuple[str, str], Factory] = {
    ("aiortc.rtcrtpsender", "RTCRtpSender"): lambda udp: _sender_chain()[0],
    ("aiortc.rtcdtlstransport", "RTCDtlsTransport"): lambda udp: _sender_chain()[1],
    ("aiortc.rtcicetransport", "RTCIceTransport"): lambda udp: _sender_chain()[2],
    ("aiortc.rtcrtpreceiver", "RTCRtpReceiver"): lambda udp: _receiver(),
    ("aioice.ice", "Connection"): lambda udp: _connection(),
    ("aioice.ice", "CandidatePair"): _candidate_pair,
    ("aioice.ice", "StunProtocol"): _stun_protocol,
    ("aioice.candidate", "Candidate"): lambda udp: _candidate(),
    ("asyncio.selector_events", "_SelectorDatagramTransport"): lambda udp: udp,
    ("aiortc.rtp", "RtpPacket"): lambda udp: _rtp_packet(),
    ("aiortc.rtp", "HeaderExtensions"): lambda udp: _header_extensions(),
    ("aiortc.rtp", "RtcpReceiverInfo"): lambda udp: _receiver_info(),
    ("aiortc.rtp", "RtcpRrPacket"): lambda udp: _rr_packet(),
    ("aiortc.rtp", "RtcpPsfbPacket"): lambda udp: _psfb_packet(),
}
"""How to build a sample of each class whose instance attributes the contract names."""
