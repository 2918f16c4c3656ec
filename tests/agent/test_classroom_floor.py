"""Who has the floor (agent/classroom.py, docs/talkback.md "The floor"): pure logic, time
injected."""

from __future__ import annotations

import pytest

from agent.classroom import CANNOT_SPEAK, NOT_ADMITTED, Classroom
from agent.errors import Conflict

KEY = "a" * 22


def spoke(room: Classroom) -> list[tuple[str | None, float, float, str]]:
    return [
        (e["pupil"], e["since"], e["seconds"], e["ended_by"])
        for e in room.audit
        if e["event"] == "spoke"
    ]


def test_give_and_take_back_with_the_turn_in_the_audit() -> None:
    room = Classroom(waiting_room=False, started_at=0.0)
    assert room.give_floor("v1", "Léa", admitted=True, can_speak=True, now=10.0) == []
    assert list(room.floor) == ["v1"] and room.floor["v1"].name == "Léa"
    assert room.give_floor("v1", "Léa", True, True, 11.0) == []  # again: nothing changes
    assert room.take_floor("v1", 42.5) is True
    assert room.take_floor("v1", 43.0) is False  # idempotent, one audit line
    assert room.floor == {}
    assert spoke(room) == [("v1", 10.0, 32.5, "teacher")]
    (line,) = [e for e in room.audit if e["event"] == "spoke"]
    assert line["name"] == "Léa" and line["at"] == 42.5
    assert room.floor_counts() == {"spoke": 1, "speaking": 0}


@pytest.mark.parametrize("floor_max", [1, 2])
def test_at_most_floor_max_the_oldest_turn_passes(floor_max: int) -> None:
    room = Classroom(waiting_room=False, started_at=0.0, floor_max=floor_max)
    for i in range(1, floor_max + 1):
        assert room.give_floor(f"v{i}", None, True, True, float(i)) == []
    # One tap more passes the floor: the oldest turn ends, never more than floor_max speak.
    assert room.give_floor("v9", None, True, True, 5.0) == ["v1"]
    assert len(room.floor) == floor_max and list(room.floor)[-1] == "v9"
    assert spoke(room) == [("v1", 1.0, 4.0, "passed")]
    assert room.floor_counts() == {"spoke": 1, "speaking": floor_max}
    assert room.settings()["floor"] == list(room.floor)
    assert room.settings()["floor_max"] == floor_max


def test_only_admitted_pupils_that_can_speak() -> None:
    room = Classroom(waiting_room=True, started_at=0.0)
    with pytest.raises(Conflict) as waiting:
        room.give_floor("v1", None, admitted=False, can_speak=True, now=1.0)
    assert waiting.value.public_message == NOT_ADMITTED and waiting.value.status == 409
    with pytest.raises(Conflict) as mute:
        room.give_floor("v1", None, admitted=True, can_speak=False, now=1.0)
    assert mute.value.public_message == CANNOT_SPEAK
    # A page on plain http:// says so; the kit never gives it the floor, whatever its offer.
    room.set_mic("v2", "insecure", 1.0)
    with pytest.raises(Conflict) as insecure:
        room.give_floor("v2", None, admitted=True, can_speak=True, now=1.0)
    assert insecure.value.class_state == "insecure"
    assert room.floor == {} and spoke(room) == []


@pytest.mark.parametrize(
    ("end", "reason"),
    [
        (lambda room, now: room.removed("v1", KEY, "Léa", now), "removed"),
        (lambda room, now: room.left("v1", "Léa", now), "left"),
        (lambda room, now: room.take_floor("v1", now, "pupil"), "pupil"),
        (lambda room, now: room.set_mic("v1", "denied", now), "microphone"),
        (lambda room, now: room.set_mic("v1", "unavailable", now), "microphone"),
        (lambda room, now: room.end_floor(now), "stop"),
    ],
)
def test_taken_back_on_every_way_out(end: object, reason: str) -> None:
    room = Classroom(waiting_room=False, started_at=0.0)
    room.joined("v1", KEY, 0.5)
    room.give_floor("v1", "Léa", True, True, 1.0)
    end(room, 3.0)  # type: ignore[operator]
    assert room.floor == {}
    assert spoke(room) == [("v1", 1.0, 2.0, reason)]


def test_the_microphone_state_as_the_page_says() -> None:
    room = Classroom(waiting_room=False, started_at=0.0)
    assert room.set_mic("v1", "ready", 1.0) is False
    room.give_floor("v1", None, True, True, 2.0)
    assert room.set_mic("v1", "on", 2.5) is False and room.mic["v1"] == "on"
    room.take_floor("v1", 4.0)
    assert room.mic["v1"] == "ready"  # the page closes it: not "on" on the kiosk any more
    assert room.set_mic("v1", "denied", 5.0) is False  # not holding: just remembered
    with pytest.raises(ValueError):
        room.set_mic("v1", "loud", 6.0)
    room.left("v1", None, 7.0)
    assert "v1" not in room.mic


def test_a_rename_shows_in_the_turn() -> None:
    room = Classroom(waiting_room=False, started_at=0.0)
    room.give_floor("v1", None, True, True, 1.0)
    room.rename("v1", "Tom")
    room.rename("v2", "nobody")  # not holding: nothing
    assert room.floor["v1"].name == "Tom"
