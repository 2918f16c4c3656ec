"""Issue 17's additions to the link, bytes in and bytes out: each stays out of the frame unless
the peer said it knows it, so a peer from before them never sees an unknown field."""

from __future__ import annotations

import json

import pytest

from kitlink import (
    CLOSE_MALFORMED,
    Health,
    ProtocolError,
    Welcome,
    WhepAnswer,
    WhepOffer,
    encode,
    parse_kit_message,
    parse_server_message,
)
from tests.provisioning.test_protocol import REPORT

COUNTS = {
    "waiting_room": True,
    "locked": False,
    "waiting": 2,
    "knocked": 5,
    "joined": 1,
    "admitted": 3,
    "removed": 1,
    "refused": 2,
    "asked": 7,
    "spoke": 4,
    "speaking": 1,
}


def test_left_out_when_absent() -> None:
    welcome = Welcome(kit_id="kit-1", name="Salle 12", health_interval_s=10, server_time=1.0)
    assert "features" not in json.loads(encode(welcome))
    offer = WhepOffer(req="r1", token="t", sdp="v=0")
    assert "pupil_key" not in json.loads(encode(offer))
    health = Health(seq=1, sent_at=1.0, report=REPORT)
    assert "classroom" not in json.loads(encode(health))["report"]


def test_round_trips() -> None:
    offer = WhepOffer(req="r1", token="t", sdp="v=0", pupil_key="A" * 22)
    assert parse_server_message(encode(offer)) == offer
    welcome = Welcome(
        kit_id="kit-1",
        name="x",
        health_interval_s=10,
        server_time=1.0,
        features=["classroom_health"],
    )
    assert parse_server_message(encode(welcome)) == welcome
    health = Health(seq=1, sent_at=1.0, report={**REPORT, "classroom": COUNTS})
    wire = encode(health)
    assert json.loads(wire)["report"]["classroom"] == COUNTS
    assert parse_kit_message(wire) == health
    answer = WhepAnswer(req="r1", status=403, error="locked", class_state="locked")
    assert parse_kit_message(encode(answer)) == answer


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "whep_offer", "req": "r", "token": "t", "sdp": "v=0", "pupil_key": "a b"},
        {"type": "whep_offer", "req": "r", "token": "t", "sdp": "v=0", "pupil_key": "x" * 65},
    ],
)
def test_a_bad_key_is_refused(frame: dict[str, object]) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_server_message(json.dumps(frame))
    assert refused.value.code == CLOSE_MALFORMED


@pytest.mark.parametrize(
    "counts", [{**COUNTS, "asked": "3"}, {**COUNTS, "waiting": -1}, {**COUNTS, "names": ["Léa"]}]
)
def test_bad_counts_are_refused(counts: dict[str, object]) -> None:
    frame = {"type": "health", "seq": 1, "sent_at": 1.0, "report": {**REPORT, "classroom": counts}}
    with pytest.raises(ProtocolError):
        parse_kit_message(json.dumps(frame))
