"""The pupil data channel protocol, bytes in and bytes out (docs/pupil-channel.md)."""

from __future__ import annotations

import json

import pytest

from agent.errors import ProtocolError
from agent.webrtc import pupil_channel as pc


@pytest.mark.parametrize(
    ("data", "event"),
    [
        (b'{"type":"hand","raised":true}', pc.SetHand(True)),
        ('{"type":"hand","raised":false}', pc.SetHand(False)),
        ('{"type":"name","name":"L\\u00e9a"}', pc.SetName("Léa")),
        ('{"type":"name","name":null}', pc.SetName(None)),
        ('{"type":"name"}', pc.SetName(None)),
        ('{"type":"name","name":"   "}', pc.SetName(None)),
        ('{"type":"name","name":"  Jean \\t\\n Pierre  "}', pc.SetName("Jean Pierre")),
        ('{"type":"name","name":"a\\u0000b\\u202ec\\u0007"}', pc.SetName("abc")),
        ('{"type":"name","name":"' + "x" * 60 + '"}', pc.SetName("x" * 40)),
        ('{"type":"name","name":"Zoe\\u0301"}', pc.SetName("Zoé")),
        ('{"type":"question","text":"Pourquoi ?"}', pc.Ask("Pourquoi ?")),
        # Markup stays text (the kiosk never renders it); control and bidi characters go, and
        # every run of white space (new lines too) is one space.
        (
            '{"type":"question","text":"<b>x</b> <a href=\\"j\\">y</a>"}',
            pc.Ask('<b>x</b> <a href="j">y</a>'),
        ),
        ('{"type":"question","text":"a\\u0000b\\u202ec\\u0007\\r\\n\\n d"}', pc.Ask("abc d")),
        ('{"type":"question","text":"' + "é" * 280 + '"}', pc.Ask("é" * 280)),
    ],
)
def test_valid_messages(data: str | bytes, event: pc.PupilEvent) -> None:
    assert pc.parse_pupil_message(data) == event


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        ("not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('"hand"', "JSON object"),
        ('{"type":"shout"}', "unknown message type"),
        ('{"raised":true}', "unknown message type"),
        ('{"type":"hand"}', "true or false"),
        ('{"type":"hand","raised":"yes"}', "true or false"),
        ('{"type":"hand","raised":1}', "true or false"),
        ('{"type":"hand","raised":true,"extra":1}', "unknown field 'extra'"),
        ('{"type":"name","name":42}', "must be a string"),
        ('{"type":"name","name":"' + "x" * 3000 + '"}', "larger than 2048 bytes"),
        ('{"type":"question","text":"' + "x" * 10_000 + '"}', "larger than 2048 bytes"),
        ('{"type":"question","text":"' + "x" * 281 + '"}', "longer than 280 characters"),
        ('{"type":"question","text":" \\u0000\\u202e\\t "}', "empty question"),
        ('{"type":"question"}', "text must be a string"),
        ('{"type":"question","text":["a"]}', "text must be a string"),
        ('{"type":"question","text":"a","to":"all"}', "unknown field 'to'"),
    ],
)
def test_refused_messages(data: str | bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        pc.parse_pupil_message(data)


def test_messages_from_the_kit() -> None:
    assert pc.welcome_message({"camera": 15, "document": 10}) == (
        '{"type":"welcome","version":3,"fps":{"camera":15,"document":10},"admitted":true}'
    )
    assert json.loads(pc.welcome_message({"camera": 30}, admitted=False))["admitted"] is False
    assert pc.admitted_message() == '{"type":"admitted"}'
    assert pc.removed_message() == '{"type":"removed"}'
    assert pc.question_message("q3", "answered") == (
        '{"type":"question","id":"q3","state":"answered"}'
    )
    assert pc.shown_message("<i>2+2</i>") == '{"type":"shown","text":"<i>2+2</i>"}'
    assert pc.shown_message(None) == '{"type":"shown","text":null}'
    with pytest.raises(ValueError, match="unknown question state"):
        pc.question_message("q1", "deleted")
    assert pc.hand_message(False) == '{"type":"hand","raised":false}'
    assert pc.ended_message() == '{"type":"ended"}'
    assert json.loads(pc.error_message("raised must be true or false")) == {
        "type": "error",
        "reason": "raised must be true or false",
    }


@pytest.mark.parametrize("level", ["full", "reduced", "audio-only"])
def test_quality_message(level: str) -> None:
    assert pc.quality_message(level) == f'{{"type":"quality","level":"{level}"}}'


@pytest.mark.parametrize("level", ["", "Full", "low", "audio_only", "reduced "])
def test_an_unknown_quality_level_is_a_programming_error(level: str) -> None:
    with pytest.raises(ValueError, match="unknown quality level"):
        pc.quality_message(level)
