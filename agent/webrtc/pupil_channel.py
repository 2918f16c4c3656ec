"""The pupil data channel: display names, hands, written questions, the waiting room, the floor
(docs/pupil-channel.md).

A sans-I/O core: :func:`parse_pupil_message` turns one received message into an event or raises
:class:`~agent.errors.ProtocolError`; :class:`MessageBudget` decides, clock injected, which
messages a pupil may send; the ``*_message`` functions build what the kit sends. The viewer
(``viewer.py``) does the I/O on the aiortc channel.

The channel is the one data channel the pupil's page opens in its WHEP peer connection, label
``classroom``, reliable and ordered. Every message is a UTF-8 JSON object with a ``type``.
"""

from __future__ import annotations

import enum
import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

from .. import boundedjson
from ..classroom import MAX_QUESTION_CHARS, MIC_STATES, clean_text
from ..errors import ProtocolError

CHANNEL_LABEL = "classroom"
PROTOCOL_VERSION = 3
MAX_MESSAGE_BYTES = 2048
"""A 280-character question in any script, JSON-escaped, fits; a 10 kB paste does not."""
MAX_NAME_CHARS = 40
MAX_DEPTH = 4
"""Messages are flat objects; deeper JSON is refused before the parser recurses into it."""


@dataclass(frozen=True, slots=True)
class SetName:
    """The pupil's display name for this session (``None``: no name)."""

    name: str | None


@dataclass(frozen=True, slots=True)
class SetHand:
    raised: bool


@dataclass(frozen=True, slots=True)
class Ask:
    """A written question: printable, one line, 1 to 280 characters (``classroom.clean_text``)."""

    text: str


@dataclass(frozen=True, slots=True)
class ReleaseFloor:
    """v3: the pupil pressed stop: they give the floor back."""


@dataclass(frozen=True, slots=True)
class MicState:
    """v3: what the page says of its microphone (``classroom.MIC_STATES``)."""

    state: str


PupilEvent = SetName | SetHand | Ask | ReleaseFloor | MicState


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
        message = boundedjson.loads(raw, MAX_DEPTH)
    except boundedjson.JsonError as exc:
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
    if kind == "question":
        _only(message, {"type", "text"})
        return Ask(_question_text(message.get("text")))
    if kind == "floor_release":
        _only(message, {"type"})
        return ReleaseFloor()
    if kind == "mic":
        _only(message, {"type", "state"})
        state = message.get("state")
        if not isinstance(state, str) or state not in MIC_STATES:
            raise ProtocolError("state must be one of " + ", ".join(MIC_STATES))
        return MicState(state)
    raise ProtocolError("unknown message type")


def _question_text(value: object) -> str:
    if not isinstance(value, str):
        raise ProtocolError("text must be a string")
    try:
        text = clean_text(value, MAX_QUESTION_CHARS)
    except ValueError:
        raise ProtocolError(f"question longer than {MAX_QUESTION_CHARS} characters") from None
    if not text:
        raise ProtocolError("empty question")
    return text


def _only(message: dict[str, object], allowed: set[str]) -> None:
    unknown = set(message) - allowed
    if unknown:
        # Named in the reply and the log: printable and short, whatever the page sent.
        key = "".join(c if c.isprintable() else "?" for c in sorted(unknown)[0][:40])
        raise ProtocolError(f"unknown field {key!r}")


class Verdict(enum.Enum):
    """What to do with one received message. Only the verdicts other than ``ACCEPT`` and
    ``DROP`` are changes of state, and only they are logged."""

    ACCEPT = "accept"
    RESUME = "resume"
    """Accepted, after messages were dropped: the pupil is back within the budget."""
    START_DROPPING = "start-dropping"
    """The first message dropped: the page is told once (``error``), the log says it once."""
    DROP = "drop"
    CLOSE = "close"
    """Still flooding: the kit closes the channel (once; everything after is dropped)."""


class MessageBudget:
    """How many messages one pupil may send on the channel: a token bucket of ``burst``
    messages refilled at ``rate`` per second. Pure logic: the caller passes the clock.

    A page sends its name and hand each time the channel opens, then one message per click;
    a pupil clicking as fast as a hand can (about 8 a second) for a few seconds stays within
    the defaults. Over the budget a message is dropped unread. Each drop is also a strike,
    and strikes fade at ``rate`` per second: a page that keeps sending at more than about
    twice the rate (a script: one pupil sent 1,100 a second, each logged) reaches
    ``close_after`` strikes and its channel is closed; its video goes on."""

    __slots__ = ("_at", "_level", "_strikes", "burst", "close_after", "closed", "dropping", "rate")

    def __init__(
        self, now: float, burst: float = 20.0, rate: float = 5.0, close_after: float = 100.0
    ) -> None:
        self.burst = burst
        self.rate = rate
        self.close_after = close_after
        self._level = burst
        self._strikes = 0.0
        self._at = now
        self.dropping = False
        self.closed = False

    def admit(self, now: float) -> Verdict:
        """The verdict on one message received at ``now``."""
        elapsed = max(0.0, now - self._at)  # a clock that steps back refills nothing
        self._at = max(self._at, now)
        self._level = min(self.burst, self._level + elapsed * self.rate)
        self._strikes = max(0.0, self._strikes - elapsed * self.rate)
        if self.closed:
            return Verdict.DROP
        if self._level >= 1.0:
            self._level -= 1.0
            if self.dropping:
                self.dropping = False
                return Verdict.RESUME
            return Verdict.ACCEPT
        self._strikes += 1.0
        if self._strikes >= self.close_after:
            self.closed = True
            return Verdict.CLOSE
        if not self.dropping:
            self.dropping = True
            return Verdict.START_DROPPING
        return Verdict.DROP


TOO_MANY_MESSAGES = "too many messages: some were dropped"
CLOSED_FOR_FLOODING = "too many messages: the channel is closed"


def _dump(message: dict[str, object]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def welcome_message(fps: Mapping[str, int], admitted: bool = True) -> str:
    """Sent when the channel opens: the protocol version the kit speaks, the frame rate each
    camera is sent at (``{"camera": 30, "document": 15}``), against which the page judges the
    rate it receives, and whether the pupil is in (``admitted`` false: in the waiting room, no
    media until ``admitted``)."""
    return _dump(
        {"type": "welcome", "version": PROTOCOL_VERSION, "fps": dict(fps), "admitted": admitted}
    )


def hand_message(raised: bool) -> str:
    """The pupil's hand as the kiosk sees it (sent when the teacher lowers it)."""
    return _dump({"type": "hand", "raised": raised})


def ended_message() -> str:
    """The teacher pressed Stop: the page shows "class ended" and does not reconnect."""
    return _dump({"type": "ended"})


QUALITY_LEVELS = ("full", "reduced", "audio-only")
"""What a pupil gets (docs/adaptation.md): ``full`` every configured camera on its top layer,
``reduced`` some camera below it, ``audio-only`` every camera paused (sound only)."""


def quality_message(level: str) -> str:
    """The quality this pupil now gets; the page says so while it is not ``full``. Sent when
    the level changes (and once after ``welcome`` if not ``full``). An unknown level is a bug
    in the kit, not something a page sent: :exc:`ValueError`."""
    if level not in QUALITY_LEVELS:
        raise ValueError(f"unknown quality level {level!r}")
    return _dump({"type": "quality", "level": level})


def error_message(reason: str) -> str:
    """A refused message; ``reason`` is one of our own public texts, never internals."""
    return _dump({"type": "error", "reason": reason})


def admitted_message() -> str:
    """The teacher let this pupil in: the media starts now."""
    return _dump({"type": "admitted"})


def removed_message() -> str:
    """The teacher removed this pupil: the page says so and does not reconnect."""
    return _dump({"type": "removed"})


QUESTION_STATES = ("open", "answered", "dismissed")


def question_message(question_id: str, state: str) -> str:
    """This pupil's question as the kiosk sees it: ``open`` when received, then ``answered``
    or ``dismissed`` when the teacher marks it."""
    if state not in QUESTION_STATES:
        raise ValueError(f"unknown question state {state!r}")
    return _dump({"type": "question", "id": question_id, "state": state})


def shown_message(text: str | None) -> str:
    """The question the teacher shows to the whole class (its text only, never the asker's
    name); ``None``: nothing shown any more."""
    return _dump({"type": "shown", "text": text})


def floor_message(you: bool, holders: list[str | None]) -> str:
    """v3, to every admitted pupil whenever the floor changes (and at admission, and in answer
    to the page's ``mic``): whether this pupil has the floor, and the names of those who have it
    (``None`` for a pupil who gave none: the page says "a pupil"), oldest turn first."""
    return _dump({"type": "floor", "you": you, "holders": list(holders)})


def lobby_timeout_message() -> str:
    """v3: this pupil waited ``classroom.WAITING_MAX_S`` without being let in: the page says so
    and does not reconnect by itself (a reload knocks again)."""
    return _dump({"type": "lobby_timeout"})
