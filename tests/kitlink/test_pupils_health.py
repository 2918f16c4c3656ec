"""The health report's ``pupils`` part (the class's distribution, docs/protocol.md "Pupils"),
bytes in and bytes out: what the server accepts, and what closes the link."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kitlink import CLOSE_MALFORMED, Health, ProtocolError, encode, parse_kit_message
from tests.provisioning.test_protocol import REPORT

PUPILS = {
    "layers": {
        "camera": {"high": 20, "mid": 3, "low": 1, "paused": 1},
        "document": {"high": 19, "low": 4, "paused": 2},
    },
    "quality": {"full": 19, "reduced": 5, "audio-only": 1},
    "worst_loss_percent": 12.5,
}


def frame(pupils: Any) -> str:
    report = {**REPORT, "pupils": pupils}
    message = {"type": "health", "seq": 3, "sent_at": 1700000000.5, "report": report}
    return json.dumps(message, separators=(",", ":"))


def test_a_report_with_the_distribution_round_trips_byte_exact() -> None:
    wire = frame(PUPILS)
    message = parse_kit_message(wire)
    assert isinstance(message, Health) and message.report.pupils is not None
    assert message.report.pupils.quality == {"full": 19, "reduced": 5, "audio-only": 1}
    assert message.report.pupils.layers.document == {"high": 19, "low": 4, "paused": 2}
    assert encode(message) == wire
    # What the server stores (the report as JSON) keeps it whole.
    assert json.loads(message.report.model_dump_json())["pupils"] == PUPILS


@pytest.mark.parametrize(
    "pupils",
    [
        {},  # nothing judged yet: all defaults
        {"layers": {}, "quality": {}, "worst_loss_percent": None},
        {"layers": {"camera": {"low": 2}}, "worst_loss_percent": 0},
        {"quality": {"audio-only": 100_000}, "worst_loss_percent": 100},
    ],
)
def test_partial_distributions_are_accepted(pupils: dict[str, Any]) -> None:
    message = parse_kit_message(frame(pupils))
    assert isinstance(message, Health) and message.report.pupils is not None


def test_a_report_without_it_is_as_before() -> None:
    """A kit before this field, and a kit talking to a server before it: the frame has no
    ``pupils`` key at all (an older server would refuse it)."""
    wire = json.dumps(
        {"type": "health", "seq": 1, "sent_at": 1.5, "report": REPORT}, separators=(",", ":")
    )
    message = parse_kit_message(wire)
    assert isinstance(message, Health) and message.report.pupils is None
    assert '"pupils"' not in encode(message)


@pytest.mark.parametrize(
    ("pupils", "where"),
    [
        ({"layers": {"camera": {"huge": 1}}}, "report.pupils.layers.camera"),
        ({"layers": {"document": {"mid": 1}}}, "report.pupils.layers.document"),  # no mid layer
        ({"layers": {"screen": {"high": 1}}}, "report.pupils.layers.screen"),
        ({"layers": {"camera": {"high": -1}}}, "report.pupils.layers.camera.high"),
        ({"layers": {"camera": {"high": 1.5}}}, "report.pupils.layers.camera.high"),
        ({"layers": {"camera": {"high": "3"}}}, "report.pupils.layers.camera.high"),
        ({"layers": {"camera": {"high": 100_001}}}, "report.pupils.layers.camera.high"),
        ({"layers": {"camera": []}}, "report.pupils.layers.camera"),
        ({"quality": {"great": 1}}, "report.pupils.quality"),
        ({"quality": {"audio_only": 1}}, "report.pupils.quality"),
        ({"quality": {"full": True}}, "report.pupils.quality.full"),
        ({"quality": []}, "report.pupils.quality"),
        ({"worst_loss_percent": -0.1}, "report.pupils.worst_loss_percent"),
        ({"worst_loss_percent": 100.5}, "report.pupils.worst_loss_percent"),
        ({"worst_loss_percent": "5"}, "report.pupils.worst_loss_percent"),
        ({"extra": 1}, "report.pupils.extra"),
        ([], "report.pupils"),
        ("lots", "report.pupils"),
    ],
)
def test_bad_values_close_the_link(pupils: Any, where: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_kit_message(frame(pupils))
    assert caught.value.code == CLOSE_MALFORMED
    assert caught.value.reason.startswith(f"invalid {where}"), caught.value.reason


def test_non_finite_loss_is_refused() -> None:
    wire = frame(PUPILS).replace('"worst_loss_percent":12.5', '"worst_loss_percent":1e999')
    with pytest.raises(ProtocolError) as caught:
        parse_kit_message(wire)
    assert caught.value.reason.startswith("invalid report.pupils.worst_loss_percent")
