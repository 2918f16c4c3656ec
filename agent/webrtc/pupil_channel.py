"""The pupil data channel: hand raising and display names (docs/pupil-channel.md).

A sans-I/O core: :func:`parse_pupil_message` turns one received message into an event or raises
:class:`~agent.errors.ProtocolError`; the ``*_message`` functions build what the kit sends. The
viewer (``viewer.py``) does the I/O on the aiortc channel.

The channel is the one data channel the pupil's page opens in its WHEP peer connection, label
``classroom``, reliable and ordered. Every message is a UTF-8 JSON object with a ``type``.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ProtocolError

CHANNEL_LABEL = "classroom"
PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 1024
MAX_NAME_CHARS = 40


@dataclass(frozen=True, slots=True)
class SetName:
    """The pupil's display name for this session (``None``: no name)."""

    name: str | None


@dataclass(frozen=True, slots=True)
class SetHand:
    raised: bool


PupilEvent = SetName | SetHand


def clean_name(value: object) -> str | None:
    """A display name safe to show: printable, single-spaced, at most 40 characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError("name must be a string")
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in unicodedata.normalize("NFC", value)
        if ch.isspace() or unicodedata.category(ch)[0] not in ("C",)
    )
    name = " ".join(kept.split())[:MAX_NAME_CHARS].strip()
    return name or None


def parse_pupil_message(data: str | bytes) -> PupilEvent:
    """Validate one message from a pupil's page."""
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        message = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError("message is not JSON") from exc
    if not isinstance(message, dict):
        raise ProtocolError("message must be a JSON object")
    kind = message.get("type")
    if kind == "name":
        _only(message, {"type", "name"})
        return SetName(clean_name(message.get("name")))
    if kind == "hand":
        _only(message, {"type", "raised"})
        raised = message.get("raised")
        if not isinstance(raised, bool):
            raise ProtocolError("raised must be true or false")
        return SetHand(raised)
    raise ProtocolError("unknown message type")


def _only(message: dict[str, object], allowed: set[str]) -> None:
    unknown = set(message) - allowed
    if unknown:
        raise ProtocolError(f"unknown field {sorted(unknown)[0]!r}")


def _dump(message: dict[str, object]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def welcome_message(fps: Mapping[str, int]) -> str:
    """Sent when the channel opens: the protocol version the kit speaks and the frame rate each
    camera is sent at (``{"camera": 30, "document": 15}``), against which the page judges the
    rate it receives."""
    return _dump({"type": "welcome", "version": PROTOCOL_VERSION, "fps": dict(fps)})


def hand_message(raised: bool) -> str:
    """The pupil's hand as the kiosk sees it (sent when the teacher lowers it)."""
    return _dump({"type": "hand", "raised": raised})


def ended_message() -> str:
    """The teacher pressed Stop: the page shows "class ended" and does not reconnect."""
    return _dump({"type": "ended"})


def error_message(reason: str) -> str:
    """A refused message; ``reason`` is one of our own public texts, never internals."""
    return _dump({"type": "error", "reason": reason})
