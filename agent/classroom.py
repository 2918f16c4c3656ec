"""Who is in the class, and what they asked: the waiting room, removal, lock, written questions,
who has the floor, and the class's audit (issue 17, docs/kiosk.md "Who is in",
docs/pupil-channel.md, docs/talkback.md "The floor").

Pure logic, no I/O, time injected: the session (``agent/session.py``) asks :class:`Classroom`
whether a join may go ahead and whether the pupil waits, tells it what happened, and does the
sending. One :class:`Classroom` lives from Start to Stop; at Stop it is dropped, and with it
every name, question and audit line (nothing is written anywhere).

Rejoin keys: the pupil page makes a random key per tab and class (``sessionStorage``) and sends
it with its WHEP offer (``X-Pupil-Key``). The kit keeps only SHA-256 digests of keys, in
memory: a removed pupil's key is refused for the rest of the class; an admitted pupil's key lets
the same tab come back after a network blip without waiting again, even once the class is
locked. A new private window has a new key: it knocks like anyone new.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import re
import unicodedata
from typing import Any

from .errors import Conflict, Forbidden, NotFound

KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
"""A rejoin key as the page makes it (16 random bytes, base64url: 22 characters)."""
MAX_QUESTION_CHARS = 280
MAX_QUESTIONS_OPEN = 200
"""Open questions kept for the kiosk in all; beyond, a pupil's new question is refused."""
MAX_OPEN_PER_PUPIL = 5
QUESTION_BURST = 3.0
QUESTION_RATE = 1 / 20
"""A pupil may ask 3 questions at once, then one every 20 s (on top of the channel's own
message budget): a class of 30 cannot bury the teacher's screen."""
WAITING_MAX_S = 20 * 60.0
"""How long a pupil may wait in the waiting room: then their page is told (``lobby_timeout``)
and their connection closed; a reload knocks again. 20 minutes: longer than a teacher takes to
notice a knock during a lesson, short enough that a tab left open does not hold one of the
class's places (``webrtc.max_viewers``) for hours."""
MAX_AUDIT = 5000
"""Audit lines kept for one class (a 30-pupil class with reconnections writes a few hundred)."""

LOCKED = "this class is locked: no new pupils can join"
REMOVED = "the teacher removed you from this class"


def key_digest(key: str | None) -> bytes | None:
    """The digest kept for a well-formed rejoin key; None for no key or a malformed one (a
    WHEP player without the page: it can be removed, not kept out, see docs/whep.md)."""
    if key is None or not KEY_PATTERN.match(key):
        return None
    return hashlib.sha256(key.encode()).digest()


def clean_text(value: str, limit: int) -> str:
    """Printable text on one line: control, format (bidi overrides), private-use and unassigned
    characters removed, every run of white space one space; raises ``ValueError`` if longer
    than ``limit`` characters once cleaned."""
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in unicodedata.normalize("NFC", value)
        if ch.isspace() or unicodedata.category(ch)[0] != "C"
    )
    text = " ".join(kept.split())
    if len(text) > limit:
        raise ValueError(f"longer than {limit} characters")
    return text


@dataclasses.dataclass(slots=True)
class Question:
    id: str
    viewer_id: str
    name: str | None
    text: str
    asked_at: float
    state: str = "open"
    """``open``, ``answered`` or ``dismissed``."""

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pupil": self.viewer_id,
            "name": self.name,
            "text": self.text,
            "asked_at": self.asked_at,
            "state": self.state,
        }


@dataclasses.dataclass(slots=True)
class _Bucket:
    level: float
    at: float

    def take(self, now: float, burst: float, rate: float) -> bool:
        self.level = min(burst, self.level + max(0.0, now - self.at) * rate)
        self.at = max(self.at, now)
        if self.level < 1.0:
            return False
        self.level -= 1.0
        return True


AUDIT_EVENTS = ("knocked", "joined", "admitted", "removed", "refused", "left", "asked", "spoke")

MIC_STATES = ("ready", "on", "denied", "unavailable", "insecure")
"""What a pupil's page says of its microphone (docs/pupil-channel.md, ``mic``): ``ready`` (it
can ask for one), ``on`` (open and sent), ``denied`` (the pupil or the browser refused),
``unavailable`` (no microphone, or the browser has no media API), ``insecure`` (the page is not
a secure context: a LAN kit reached over plain ``http://``, docs/talkback.md)."""
MIC_FAILED = ("denied", "unavailable", "insecure")
"""A holder's page reporting one of these loses the floor at once: nobody is heard."""
FLOOR_END_REASONS = ("teacher", "pupil", "passed", "microphone", "removed", "left", "stop")
"""Why a turn ended, as the audit's ``spoke`` line says: the teacher took it back, the pupil
pressed stop, the teacher gave it to someone else while full, the page's microphone failed, the
pupil was removed or left, the class stopped."""
NOT_ADMITTED = "this pupil is in the waiting room"
CANNOT_SPEAK = "this pupil's page cannot send sound"


@dataclasses.dataclass(slots=True)
class Turn:
    """One pupil's turn with the floor."""

    viewer_id: str
    name: str | None
    since: float


class Classroom:
    """The class's admission and questions state (one per live class)."""

    def __init__(self, waiting_room: bool, started_at: float, floor_max: int = 1) -> None:
        self.waiting_room = waiting_room
        self.floor_max = floor_max
        self.floor: dict[str, Turn] = {}
        """Who has the floor now, in the order it was given (at most ``floor_max``)."""
        self.mic: dict[str, str] = {}
        """Each pupil's microphone as its page last said (``MIC_STATES``), for the kiosk."""
        self.locked = False
        self.started_at = started_at
        self._admitted_keys: set[bytes] = set()
        self._removed_keys: set[bytes] = set()
        self.questions: dict[str, Question] = {}
        self.shown: str | None = None
        """The question shown to the whole class (its id), if any."""
        self._question_seq = 0
        self._buckets: dict[str, _Bucket] = {}
        self.audit: collections.deque[dict[str, Any]] = collections.deque(maxlen=MAX_AUDIT)
        self.counts: collections.Counter[str] = collections.Counter()
        """Events of this class counted (no names): the health report's ``class`` figures."""

    # -- joins -------------------------------------------------------------------------------

    def check_join(self, key: str | None, now: float) -> None:
        """Refuse a WHEP offer from a removed tab (``removed``) or a new pupil of a locked class
        (``locked``): 403, with the state the page shows."""
        digest = key_digest(key)
        if digest is not None and digest in self._removed_keys:
            self._log(now, "refused", None, None, reason="removed")
            raise Forbidden(REMOVED, "removed")
        if self.locked and (digest is None or digest not in self._admitted_keys):
            self._log(now, "refused", None, None, reason="locked")
            raise Forbidden(LOCKED, "locked")

    def joined(self, viewer_id: str, key: str | None, now: float) -> bool:
        """A pupil's offer was answered; returns whether they are in at once (no waiting
        room, or a tab admitted earlier in this class coming back)."""
        digest = key_digest(key)
        back = digest is not None and digest in self._admitted_keys
        admitted = not self.waiting_room or back
        self._log(now, "joined" if admitted else "knocked", viewer_id, None)
        if admitted and digest is not None:
            self._admitted_keys.add(digest)
        return admitted

    def admitted(self, viewer_id: str, key: str | None, name: str | None, now: float) -> None:
        digest = key_digest(key)
        if digest is not None:
            self._admitted_keys.add(digest)
        self._log(now, "admitted", viewer_id, name)

    def removed(self, viewer_id: str, key: str | None, name: str | None, now: float) -> None:
        """The teacher removed this pupil: their tab is refused from now on, their open
        questions are dismissed (and hidden if shown)."""
        digest = key_digest(key)
        if digest is not None:
            self._removed_keys.add(digest)
            self._admitted_keys.discard(digest)
        for question in self.questions.values():
            if question.viewer_id == viewer_id and question.state == "open":
                question.state = "dismissed"
                if self.shown == question.id:
                    self.shown = None
        self.take_floor(viewer_id, now, "removed")
        self._log(now, "removed", viewer_id, name)

    def left(self, viewer_id: str, name: str | None, now: float) -> None:
        self.take_floor(viewer_id, now, "left")
        self.mic.pop(viewer_id, None)
        self._buckets.pop(viewer_id, None)
        self._log(now, "left", viewer_id, name)

    # -- questions ---------------------------------------------------------------------------

    def ask(self, viewer_id: str, name: str | None, text: str, now: float) -> Question:
        """A pupil's question (already cleaned); raises ``ValueError`` with the reason sent to
        the page when over the pupil's question budget or the kiosk's list is full."""
        bucket = self._buckets.setdefault(viewer_id, _Bucket(QUESTION_BURST, now))
        mine = sum(
            1 for q in self.questions.values() if q.viewer_id == viewer_id and q.state == "open"
        )
        if mine >= MAX_OPEN_PER_PUPIL:
            raise ValueError("too many questions waiting for an answer")
        if sum(1 for q in self.questions.values() if q.state == "open") >= MAX_QUESTIONS_OPEN:
            raise ValueError("the teacher has too many questions right now")
        if not bucket.take(now, QUESTION_BURST, QUESTION_RATE):
            raise ValueError("too many questions: wait a little")
        self._question_seq += 1
        question = Question(f"q{self._question_seq}", viewer_id, name, text, now)
        self.questions[question.id] = question
        self._log(now, "asked", viewer_id, name)
        return question

    def set_question(self, question_id: str, state: str) -> Question:
        """The teacher marks a question ``answered`` or ``dismissed``; either hides it from the
        class if it was shown. Answered and dismissed questions leave the kiosk's list."""
        if state not in ("answered", "dismissed"):
            raise ValueError(f"unknown question state {state!r}")
        question = self._question(question_id)
        question.state = state
        if self.shown == question_id:
            self.shown = None
        return question

    def show(self, question_id: str | None) -> Question | None:
        """Show an open question to the whole class (None: show none)."""
        if question_id is None:
            self.shown = None
            return None
        question = self._question(question_id)
        if question.state != "open":
            raise Conflict("this question is no longer open")
        self.shown = question_id
        return question

    def shown_text(self) -> str | None:
        return self.questions[self.shown].text if self.shown in self.questions else None

    def _question(self, question_id: str) -> Question:
        question = self.questions.get(question_id)
        if question is None:
            raise NotFound("unknown question")
        return question

    def open_questions(self) -> list[dict[str, Any]]:
        return [q.public() for q in self.questions.values() if q.state == "open"]

    # -- the floor (docs/talkback.md "The floor") --------------------------------------------

    def give_floor(
        self,
        viewer_id: str,
        name: str | None,
        admitted: bool,
        can_speak: bool,
        now: float,
    ) -> list[str]:
        """Give this pupil the floor; returns the pupils whose turn ended to make room (the
        oldest turn when ``floor_max`` pupils have it already: one tap passes the floor, the
        teacher never has to take it back first). Giving it again to a holder changes nothing.
        Refused (``Conflict``) for a pupil in the waiting room, or whose page cannot send sound
        (its offer's audio cannot send, the kit has no talk-back, or its page is not a secure
        context): the kit never asks a page it would not hear."""
        if viewer_id in self.floor:
            return []
        if not admitted:
            raise Conflict(NOT_ADMITTED, "waiting")
        if not can_speak or self.mic.get(viewer_id) == "insecure":
            raise Conflict(CANNOT_SPEAK, self.mic.get(viewer_id) or "cannot-speak")
        passed = []
        while len(self.floor) >= self.floor_max:
            oldest = next(iter(self.floor))
            self.take_floor(oldest, now, "passed")
            passed.append(oldest)
        self.floor[viewer_id] = Turn(viewer_id, name, now)
        return passed

    def take_floor(self, viewer_id: str, now: float, reason: str = "teacher") -> bool:
        """End this pupil's turn (``reason``: ``FLOOR_END_REASONS``), with an audit line
        ``spoke`` giving when it began and ended; False if they did not have the floor."""
        turn = self.floor.pop(viewer_id, None)
        if turn is None:
            return False
        if self.mic.get(viewer_id) == "on":  # the page closes it now
            self.mic[viewer_id] = "ready"
        self._log(
            now,
            "spoke",
            viewer_id,
            turn.name,
            since=round(turn.since, 3),
            seconds=round(max(0.0, now - turn.since), 1),
            ended_by=reason,
        )
        return True

    def end_floor(self, now: float) -> list[str]:
        """Stop: every turn ends (audited); returns who had the floor."""
        holders = list(self.floor)
        for viewer_id in holders:
            self.take_floor(viewer_id, now, "stop")
        return holders

    def set_mic(self, viewer_id: str, state: str, now: float) -> bool:
        """What the pupil's page says of its microphone; returns whether that ended its turn
        (a holder whose microphone is refused or missing: nobody would be heard)."""
        if state not in MIC_STATES:
            raise ValueError(f"unknown microphone state {state!r}")
        self.mic[viewer_id] = state
        if state in MIC_FAILED:
            return self.take_floor(viewer_id, now, "microphone")
        return False

    def rename(self, viewer_id: str, name: str | None) -> None:
        """A holder changed its name: the next floor message says the new one."""
        turn = self.floor.get(viewer_id)
        if turn is not None:
            turn.name = name

    def floor_counts(self) -> dict[str, int]:
        """Turns given so far and pupils speaking now: no names (health)."""
        return {"spoke": self.counts["spoke"], "speaking": len(self.floor)}

    # -- audit -------------------------------------------------------------------------------

    def _log(
        self,
        now: float,
        event: str,
        viewer_id: str | None,
        name: str | None,
        **extra: str | float,
    ) -> None:
        self.counts[event if event != "refused" else f"refused_{extra.get('reason')}"] += 1
        self.audit.append(
            {"at": round(now, 3), "event": event, "pupil": viewer_id, "name": name, **extra}
        )

    def audit_counts(self) -> dict[str, int]:
        """How many pupils knocked, joined, were admitted, removed, refused, asked: no names
        (the health report's ``class`` section, docs/protocol.md)."""
        keys = ("knocked", "joined", "admitted", "removed", "asked")
        out = {key: self.counts[key] for key in keys}
        out["refused"] = self.counts["refused_locked"] + self.counts["refused_removed"]
        return out

    def settings(self) -> dict[str, Any]:
        return {
            "waiting_room": self.waiting_room,
            "locked": self.locked,
            "shown": self.shown,
            "floor": list(self.floor),
            "floor_max": self.floor_max,
        }
