"""Who is in the class, and what they asked: the waiting room, removal, lock, written questions
and the class's audit (issue 17, docs/kiosk.md "Who is in", docs/pupil-channel.md).

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


AUDIT_EVENTS = ("knocked", "joined", "admitted", "removed", "refused", "left", "asked")


class Classroom:
    """The class's admission and questions state (one per live class)."""

    def __init__(self, waiting_room: bool, started_at: float) -> None:
        self.waiting_room = waiting_room
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
        self._log(now, "removed", viewer_id, name)

    def left(self, viewer_id: str, name: str | None, now: float) -> None:
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

    # -- audit -------------------------------------------------------------------------------

    def _log(
        self, now: float, event: str, viewer_id: str | None, name: str | None, **extra: str
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
        return {"waiting_room": self.waiting_room, "locked": self.locked, "shown": self.shown}
