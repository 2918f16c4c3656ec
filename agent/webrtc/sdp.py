"""Validation of WHEP offers, bytes in, verdict out.

A WHEP offer is checked here before aiortc sees it, so that a malformed or unsupported offer
gets a 400 with a reason a player's developer can act on, and nothing internal leaks.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from aiortc import sdp as aiortc_sdp

from ..errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

MAX_OFFER_BYTES = 64 * 1024
VIDEO_CODECS = ("h264", "vp8")
AUDIO_CODECS = ("opus",)
UNSUPPORTED_CODEC = "unsupported codec"
"""How the body of the ``415`` for an offer without a codec the kit sends begins (a browser
offering neither H.264 with packetization-mode=1 nor VP8, or no Opus: Debian's Firefox without
VP8, a VP9/AV1-only player). The pupil page shows "navigateur non compatible" on a 415
(docs/whep.md, "Errors"): before, the 400 it got was retried like a network blip, forever."""
_LINE = re.compile(r"^[a-z]=.*$")
_NUMBER = re.compile(r"[0-9]{1,10}")


MAX_REMOTE_CANDIDATES = 20
"""Remote candidates the kit uses from one offer; the rest are dropped. A browser offers 1–8
(one per interface and address family, plus a server-reflexive and a relayed one); an offer
with 1,000 made the kit send ~2,600 STUN requests to the addresses it named (issue 13)."""
MAX_MDNS_NAMES = 4
"""Distinct ``….local`` names the kit tries to resolve per offer (one multicast query each); a
browser hides each of its addresses behind one name, so 1–2 in practice."""


@dataclass(frozen=True, slots=True)
class Offer:
    """A validated offer: its text (without candidates) and how many media sections of each
    kind want media."""

    sdp: str
    kinds: tuple[str, ...]
    """Kind of every m-line in order: ``audio``, ``video`` or ``application``."""
    directions: tuple[str, ...] = ()
    """Direction of every m-line in order (``sendrecv``, ``recvonly``…): a ``sendrecv`` audio
    line is a page that can send its microphone (talk-back, docs/talkback.md)."""
    candidates: tuple[tuple[str, str], ...] = ()
    """``(mid, candidate)`` of the offer's distinct UDP candidates (at most
    ``MAX_REMOTE_CANDIDATES``), taken out of :attr:`sdp`; the viewer adds them after answering."""
    dropped_candidates: int = 0
    """Candidates over the caps, not used (duplicates and TCP ones are not counted)."""

    @property
    def mdns_candidates(self) -> tuple[tuple[str, str], ...]:
        """The :attr:`candidates` named ``….local`` (resolved in the background)."""
        return tuple(c for c in self.candidates if is_mdns(c[1]))

    @property
    def video_count(self) -> int:
        return self.kinds.count("video")

    @property
    def audio_count(self) -> int:
        return self.kinds.count("audio")

    @property
    def has_data_channel(self) -> bool:
        return "application" in self.kinds


def is_mdns(candidate: str) -> bool:
    """Whether a ``candidate:…`` value names its address with an mDNS ``….local`` name."""
    fields = candidate.split()
    return len(fields) > 4 and fields[4].lower().endswith(".local")


def parse_offer(body: bytes) -> Offer:
    """Check a WHEP offer; raise :class:`BadRequest` with a precise, safe reason (or
    :class:`PayloadTooLarge` over ``MAX_OFFER_BYTES``, :class:`UnsupportedMediaType` when an
    m-line offers no codec the kit sends)."""
    if len(body) > MAX_OFFER_BYTES:
        raise PayloadTooLarge(f"body larger than {MAX_OFFER_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("SDP offer is not UTF-8 text") from None
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line]
    if not lines or lines[0].strip() != "v=0":
        raise BadRequest("SDP offer must start with v=0")
    for number, line in enumerate(lines, 1):
        if not _LINE.match(line):
            raise BadRequest(f"SDP line {number} is not of the form x=value")
    if not any(line.startswith("m=") for line in lines):
        raise BadRequest("SDP offer has no media section (m=)")
    _check_payload_types(lines)
    lines, taken = _take_candidates(lines)
    normalized = "\r\n".join(lines) + "\r\n"
    try:
        description = aiortc_sdp.SessionDescription.parse(normalized)
    except Exception:  # aiortc's parser raises many types on bad input
        raise BadRequest("SDP offer could not be parsed") from None
    kinds = tuple(media.kind for media in description.media)
    wanted = 0
    for index, media in enumerate(description.media):
        wanted += _check_media(index, media)
    if wanted == 0:
        raise BadRequest("SDP offer asks for no audio or video (recvonly/sendrecv m-line)")
    mids = [media.rtp.muxId for media in description.media]
    _check_mids(mids, description.group)
    used, dropped = _cap_candidates(taken)
    directions = tuple(media.direction or "" for media in description.media)
    candidates = tuple((mids[i], value) for i, value in used)
    return Offer(normalized, kinds, directions, candidates, dropped)


def _take_candidates(lines: list[str]) -> tuple[list[str], list[tuple[int, str]]]:
    """Take every ``a=candidate`` and ``a=end-of-candidates`` out of the offer; returns the
    other lines and ``(m-line index, candidate)`` of each distinct, usable candidate.

    aiortc would add the candidates itself in ``setRemoteDescription``, one m-line per
    transport, the last m-line's list replacing the others': a browser offering with
    ``bundlePolicy: "max-bundle"`` (the pupil page) lists its candidates under the first m-line
    only, so the kit was left with none and connected only when the pupil's own checks reached
    it (a LAN; issue 12). The viewer adds them after answering, to the transport the m-line
    ended up on. mDNS names (``….local``, a browser hiding its addresses) would also hold the
    answer for the resolver's timeout (1 s, always for a pupil at home). Without
    end-of-candidates the kit keeps listening for the pupil's own checks, which is how it learns
    the address of a pupil whose candidates it cannot reach (peer-reflexive).

    Kept: UDP candidates (the kit speaks ICE over UDP only) whose address is an IP or an mDNS
    name, once per component and transport address (aiortc repeats them in every m-line)."""
    kept: list[str] = []
    taken: list[tuple[int, str]] = []
    seen: set[tuple[str, str, str]] = set()
    section = -1
    for line in lines:
        if line.startswith("m="):
            section += 1
        if line.strip() == "a=end-of-candidates":
            continue
        if not line.startswith("a=candidate:"):
            kept.append(line)
            continue
        value = line[2:].strip()
        fields = value.split()
        if not _well_formed(fields):
            where = f"m-line {section}" if section >= 0 else "session level"
            raise BadRequest(f"{where}: a=candidate line could not be parsed")
        key = (fields[1], fields[4].lower(), fields[5])
        if section < 0 or fields[2].lower() != "udp" or key in seen or not _usable(fields[4]):
            continue
        seen.add(key)
        taken.append((section, value))
    return kept, taken


def _well_formed(fields: list[str]) -> bool:
    """``foundation component transport priority address port typ type …`` with numbers in
    range (aiortc's own parser would raise on some, accept others it cannot send to)."""
    if len(fields) < 8 or fields[6] != "typ":
        return False
    limits = ((fields[1], 256), (fields[3], 2**32 - 1), (fields[5], 65535))
    return all(_NUMBER.fullmatch(text) and 0 < int(text) <= top for text, top in limits)


def _usable(host: str) -> bool:
    if host.lower().endswith(".local"):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cap_candidates(
    taken: list[tuple[int, str]],
) -> tuple[list[tuple[int, str]], int]:
    """The first ``MAX_REMOTE_CANDIDATES`` candidates, of which those named by mDNS use at most
    ``MAX_MDNS_NAMES`` distinct names; returns them and how many were dropped."""
    used: list[tuple[int, str]] = []
    names: set[str] = set()
    for section, value in taken:
        if len(used) >= MAX_REMOTE_CANDIDATES:
            break
        if is_mdns(value):
            name = value.split()[4].lower()
            if name not in names and len(names) >= MAX_MDNS_NAMES:
                continue
            names.add(name)
        used.append((section, value))
    return used, len(taken) - len(used)


def _check_mids(mids: list[str], groups: list[aiortc_sdp.GroupDescription]) -> None:
    """Every m-line names itself with a distinct ``a=mid`` (JSEP, RFC 8829; every browser and
    WHEP player does), and an ``a=group`` names only those (RFC 8843). aiortc answered an offer
    whose first m-line had no mid, or whose BUNDLE group began with a mid no m-line had, with an
    AttributeError, then failed to close the connection half-way, its sockets left open (found
    by tests/agent/webrtc/test_sdp_fuzz.py)."""
    for index, mid in enumerate(mids):
        if not mid:
            raise BadRequest(f"m-line {index}: missing a=mid")
        if mid in mids[:index]:
            raise BadRequest(f"m-line {index}: a=mid {mid[:20]!r} is used twice")
    for group in groups:
        if any(str(item) not in mids for item in group.items):
            raise BadRequest(f"a=group:{group.semantic[:20]} names an a=mid no m-line has")


_RTPMAP = re.compile(r"a=rtpmap:([0-9]{1,3}) ")


def _check_payload_types(lines: list[str]) -> None:
    """Each section maps a payload type (0–127, RFC 3550) at most once. aiortc's parser adds
    every ``a=rtcp-fb`` line to every codec of its type: 1,000 copies of one ``a=rtpmap`` and
    1,000 of one ``a=rtcp-fb`` (56 KB) took 1.3 s of CPU, quadratic (found by
    tests/agent/webrtc/test_sdp_fuzz.py); at most 128 mappings a section keep it linear."""
    section, seen = -1, set[int]()
    for line in lines:
        if line.startswith("m="):
            section, seen = section + 1, set()
        elif line.startswith("a=rtpmap:"):
            match = _RTPMAP.match(line)
            number = int(match.group(1)) if match else -1
            if not 0 <= number <= 127 or number in seen:
                where = f"m-line {section}" if section >= 0 else "session level"
                raise BadRequest(f"{where}: a=rtpmap payload types must be distinct, 0 to 127")
            seen.add(number)


def _check_media(index: int, media: aiortc_sdp.MediaDescription) -> int:
    """Check one m-line; return 1 if it asks to receive audio or video from us."""
    where = f"m-line {index} ({media.kind})"
    if media.kind not in ("audio", "video", "application"):
        raise BadRequest(f"{where}: unsupported media kind")
    if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
        raise BadRequest(f"{where}: missing a=ice-ufrag or a=ice-pwd")
    if media.dtls is None or not media.dtls.fingerprints:
        raise BadRequest(f"{where}: missing a=fingerprint (DTLS is required)")
    if media.kind == "application":
        return 0
    if media.port == 0 or media.direction in ("inactive", "sendonly"):
        return 0
    names = {codec.mimeType.split("/")[-1].lower() for codec in media.rtp.codecs}
    supported = VIDEO_CODECS if media.kind == "video" else AUDIO_CODECS
    if not names.intersection(supported):
        raise UnsupportedMediaType(
            f"{UNSUPPORTED_CODEC}: {where} (this server sends {', '.join(supported)})"
        )
    if media.kind == "video" and "h264" in names and "vp8" not in names:
        modes = {
            str(codec.parameters.get("packetization-mode", "0"))
            for codec in media.rtp.codecs
            if codec.mimeType.lower() == "video/h264"
        }
        if "1" not in modes:
            raise UnsupportedMediaType(
                f"{UNSUPPORTED_CODEC}: {where}: H264 needs packetization-mode=1"
            )
    return 1


def negotiated_codecs(answer_sdp: str) -> list[str]:
    """First (sending) codec of each m-line of our answer, lower-case (``h264``, ``opus``, '')."""
    description = aiortc_sdp.SessionDescription.parse(answer_sdp)
    out = []
    for media in description.media:
        codecs = [c for c in media.rtp.codecs if c.mimeType.lower() != f"{media.kind}/rtx"]
        out.append(codecs[0].mimeType.split("/")[-1].lower() if codecs and media.port else "")
    return out
