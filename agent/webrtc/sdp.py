"""Validation of WHEP offers, bytes in, verdict out.

A WHEP offer is checked here before aiortc sees it, so that a malformed or unsupported offer
gets a 400 with a reason a player's developer can act on, and nothing internal leaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiortc import sdp as aiortc_sdp

from ..errors import BadRequest, PayloadTooLarge

MAX_OFFER_BYTES = 64 * 1024
VIDEO_CODECS = ("h264", "vp8")
AUDIO_CODECS = ("opus",)
_LINE = re.compile(r"^[a-z]=.*$")


@dataclass(frozen=True, slots=True)
class Offer:
    """A validated offer: its text and how many media sections of each kind want media."""

    sdp: str
    kinds: tuple[str, ...]
    """Kind of every m-line in order: ``audio``, ``video`` or ``application``."""
    mdns_candidates: tuple[tuple[str, str], ...] = ()
    """``(mid, candidate)`` of the candidates named ``….local``, taken out of :attr:`sdp`."""

    @property
    def video_count(self) -> int:
        return self.kinds.count("video")

    @property
    def audio_count(self) -> int:
        return self.kinds.count("audio")

    @property
    def has_data_channel(self) -> bool:
        return "application" in self.kinds


def parse_offer(body: bytes) -> Offer:
    """Check a WHEP offer; raise :class:`BadRequest` with a precise, safe reason (or
    :class:`PayloadTooLarge` over ``MAX_OFFER_BYTES``)."""
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
    lines, mdns = _take_mdns_candidates(lines)
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
    return Offer(normalized, kinds, tuple((mids[index], value) for index, value in mdns))


def _take_mdns_candidates(lines: list[str]) -> tuple[list[str], list[tuple[int, str]]]:
    """Take the mDNS candidates (``….local``: a browser hiding the pupil's addresses) and, if
    there were any, ``a=end-of-candidates`` out of the offer; returns the other lines and
    ``(m-line index, candidate)`` of those taken.

    aiortc resolves them inside ``setRemoteDescription``, which would hold every such pupil's
    answer for the resolver's timeout (1 s) when the name cannot be resolved, as it never can
    for a pupil at home. The viewer adds them once it has answered; without end-of-candidates
    the kit keeps listening for the pupil's own checks, which is how it learns the pupil's
    address (peer-reflexive) when the name stays unknown."""
    kept: list[str] = []
    taken: list[tuple[int, str]] = []
    section = -1
    for line in lines:
        if line.startswith("m="):
            section += 1
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) > 4 and fields[4].lower().endswith(".local"):
                taken.append((section, line[2:]))
                continue
        kept.append(line)
    if taken:
        kept = [line for line in kept if line.strip() != "a=end-of-candidates"]
    return kept, taken


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
        raise BadRequest(f"{where}: no supported codec (this server sends {', '.join(supported)})")
    if media.kind == "video" and "h264" in names and "vp8" not in names:
        modes = {
            str(codec.parameters.get("packetization-mode", "0"))
            for codec in media.rtp.codecs
            if codec.mimeType.lower() == "video/h264"
        }
        if "1" not in modes:
            raise BadRequest(f"{where}: H264 needs packetization-mode=1")
    return 1


def negotiated_codecs(answer_sdp: str) -> list[str]:
    """First (sending) codec of each m-line of our answer, lower-case (``h264``, ``opus``, '')."""
    description = aiortc_sdp.SessionDescription.parse(answer_sdp)
    out = []
    for media in description.media:
        codecs = [c for c in media.rtp.codecs if c.mimeType.lower() != f"{media.kind}/rtx"]
        out.append(codecs[0].mimeType.split("/")[-1].lower() if codecs and media.port else "")
    return out
