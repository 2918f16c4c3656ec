"""Who is in the class and what they asked (agent/classroom.py): pure logic, time injected."""

from __future__ import annotations

import pytest

from agent.classroom import (
    MAX_OPEN_PER_PUPIL,
    Classroom,
    clean_text,
    key_digest,
)
from agent.errors import Conflict, Forbidden, NotFound

KEY_A = "a" * 22
KEY_B = "b" * 22


def test_without_a_waiting_room_everyone_is_in() -> None:
    room = Classroom(waiting_room=False, started_at=0.0)
    room.check_join(KEY_A, 1.0)
    assert room.joined("v1", KEY_A, 1.0) is True
    assert room.joined("v2", None, 1.0) is True
    assert room.audit_counts()["joined"] == 2


def test_the_waiting_room_then_a_blip_does_not_wait_again() -> None:
    room = Classroom(waiting_room=True, started_at=0.0)
    assert room.joined("v1", KEY_A, 1.0) is False
    room.admitted("v1", KEY_A, "Léa", 2.0)
    # The same tab back after a network blip: in at once; a new tab knocks.
    assert room.joined("v2", KEY_A, 3.0) is True
    assert room.joined("v3", KEY_B, 3.0) is False
    assert room.joined("v4", None, 3.0) is False
    assert [e["event"] for e in room.audit] == ["knocked", "admitted", "joined"] + ["knocked"] * 2


def test_a_removed_tab_is_refused_and_a_new_one_knocks() -> None:
    room = Classroom(waiting_room=True, started_at=0.0)
    room.joined("v1", KEY_A, 1.0)
    room.admitted("v1", KEY_A, "Léa", 2.0)
    room.removed("v1", KEY_A, "Léa", 3.0)
    with pytest.raises(Forbidden) as refused:
        room.check_join(KEY_A, 4.0)
    assert refused.value.class_state == "removed" and refused.value.status == 403
    room.check_join(KEY_B, 4.0)  # a new private window may knock
    assert room.joined("v2", KEY_B, 4.0) is False
    assert room.audit_counts() == {
        "knocked": 2,
        "joined": 0,
        "admitted": 1,
        "removed": 1,
        "asked": 0,
        "refused": 1,
    }


def test_lock_refuses_new_pupils_not_those_coming_back() -> None:
    room = Classroom(waiting_room=False, started_at=0.0)
    room.joined("v1", KEY_A, 1.0)
    room.locked = True
    room.check_join(KEY_A, 2.0)  # admitted earlier: may come back
    for key in (KEY_B, None, "short", "x" * 65, "é" * 22):
        with pytest.raises(Forbidden) as refused:
            room.check_join(key, 2.0)
        assert refused.value.class_state == "locked"
    room.locked = False
    room.check_join(KEY_B, 3.0)


def test_keys_are_kept_as_digests_and_malformed_ones_ignored() -> None:
    assert key_digest(None) is None and key_digest("a b" * 10) is None
    digest = key_digest(KEY_A)
    assert digest is not None and len(digest) == 32 and KEY_A.encode() not in digest


def test_questions_answered_dismissed_shown() -> None:
    room = Classroom(waiting_room=False, started_at=0.0)
    q1 = room.ask("v1", "Léa", "Pourquoi ?", 1.0)
    q2 = room.ask("v2", None, "<script>alert(1)</script>", 2.0)
    assert [q["id"] for q in room.open_questions()] == [q1.id, q2.id]
    room.show(q2.id)
    assert room.shown_text() == "<script>alert(1)</script>"
    room.set_question(q2.id, "answered")
    assert room.shown is None and room.shown_text() is None
    room.set_question(q1.id, "dismissed")
    assert room.open_questions() == []
    with pytest.raises(Conflict):
        room.show(q1.id)
    with pytest.raises(NotFound):
        room.set_question("q99", "answered")
    with pytest.raises(ValueError):
        room.set_question(q1.id, "open")
    assert room.audit_counts()["asked"] == 2


def test_a_pupil_cannot_bury_the_teacher_in_questions() -> None:
    room = Classroom(waiting_room=False, started_at=0.0)
    for _ in range(3):
        room.ask("v1", None, "?", 10.0)
    with pytest.raises(ValueError, match="wait a little"):
        room.ask("v1", None, "?", 10.0)
    room.ask("v2", None, "?", 10.0)  # another pupil is not held back
    room.ask("v1", None, "?", 30.0)  # one more every 20 s
    with pytest.raises(ValueError, match="too many questions waiting"):
        for i in range(MAX_OPEN_PER_PUPIL):
            room.ask("v1", None, "?", 100.0 + 20 * i)


def test_a_removed_pupils_questions_are_dismissed_and_hidden() -> None:
    room = Classroom(waiting_room=False, started_at=0.0)
    q = room.ask("v1", "Léa", "?", 1.0)
    room.show(q.id)
    room.removed("v1", KEY_A, "Léa", 2.0)
    assert room.shown is None and room.open_questions() == []


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("  a\u0000b\u202e c\n\nd\t", "ab c d"),
        ("\u200b\ufeff", ""),
        ("x" * 280, "x" * 280),
    ],
)
def test_clean_text(text: str, clean: str) -> None:
    assert clean_text(text, 280) == clean


def test_clean_text_refuses_too_long() -> None:
    with pytest.raises(ValueError, match="longer than 280"):
        clean_text("x" * 281, 280)
