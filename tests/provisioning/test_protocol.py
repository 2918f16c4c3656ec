"""The link protocol, bytes in and bytes out (kitlink/messages.py, docs/protocol.md)."""

from __future__ import annotations

import json

import pytest

from kitlink import (
    CLOSE_MALFORMED,
    CLOSE_TOO_BIG,
    CLOSE_TOO_FAST,
    MAX_MESSAGE_BYTES,
    ConfigAck,
    Health,
    Hello,
    MessageBudget,
    ProtocolError,
    PushConfig,
    PushedConfig,
    Welcome,
    WhepOffer,
    config_version,
    encode,
    merge_layers,
    parse_kit_message,
    parse_server_message,
)

REPORT = {
    "software": "0.1.0",
    "uptime_s": 12.5,
    "cpu_percent": 31.0,
    "load": [0.5, 0.4, 0.3],
    "memory": {"total_mb": 3900, "available_mb": 2100},
    "disk_free_mb": 51200,
    "cpu_temp_c": None,
    "devices": {
        "camera": {"state": "ok", "detail": ""},
        "document": {"state": "missing", "detail": "device not found"},
        "microphone": {"state": "ok", "detail": ""},
    },
    "session": {"state": "live", "viewers": 3, "elapsed_s": 60.0},
    "streams": [
        {
            "source": "camera",
            "codec": "h264",
            "fps": 30.0,
            "bitrate_kbps": 1800.0,
            "loss_percent": 0.0,
        }
    ],
}


def test_health_round_trip_is_byte_exact() -> None:
    wire = json.dumps({"type": "health", "seq": 7, "sent_at": 1700000000.25, "report": REPORT},
                      separators=(",", ":"))  # fmt: skip
    message = parse_kit_message(wire.encode())
    assert isinstance(message, Health)
    assert message.report.problems() == ["document"]
    assert encode(message) == wire
    assert not message.queued and message.dropped == 0


def test_queued_health_carries_its_flags() -> None:
    """A report queued while the link was down: marked, with the count dropped before it."""
    wire = json.dumps({"type": "health", "seq": 8, "sent_at": 1700000000.5, "report": REPORT,
                       "queued": True, "dropped": 3}, separators=(",", ":"))  # fmt: skip
    message = parse_kit_message(wire.encode())
    assert isinstance(message, Health) and message.queued and message.dropped == 3
    assert encode(message) == wire


def test_hello_defaults_and_encoding() -> None:
    wire = (
        '{"type":"hello","v":1,"kit_id":"kit-0a1b2c3d4e5f","secret":"'
        + "s" * 43
        + '","software":"0.1.0"}'
    )
    message = parse_kit_message(wire)
    assert isinstance(message, Hello) and message.session.state == "idle"
    assert json.loads(encode(message)) == {
        **json.loads(wire),
        "config_version": None,
        "session": {"state": "idle", "token_sha256": None},
    }


def test_server_messages_parse_and_encode() -> None:
    welcome = Welcome(kit_id="kit-1", name="Salle 1", health_interval_s=10, server_time=1.5)
    assert encode(welcome) == (
        '{"type":"welcome","v":1,"kit_id":"kit-1","name":"Salle 1",'
        '"health_interval_s":10.0,"server_time":1.5}'
    )
    assert parse_server_message(encode(welcome)) == welcome
    push = PushConfig(
        version="0123456789abcdef", config=PushedConfig.model_validate({"camera": {"fps": 15}})
    )
    assert parse_server_message(encode(push)) == push
    offer = WhepOffer(req="r1", token="tok", sdp="v=0\r\n")
    assert parse_server_message(encode(offer).encode()) == offer


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        (b"\xff", "not valid JSON"),
        ("", "not valid JSON"),
        ("null", "not a JSON object"),
        ('{"type": 5}', "unknown message type"),
        ('{"type": "welcome"}', "unknown message type"),  # a server message sent by a kit
        ('{"type": "config_ack", "version": "zz", "status": "applied"}', "invalid version"),
        (
            '{"type": "config_ack", "version": "0123456789abcdef", "status": "maybe"}',
            "invalid status",
        ),
        (
            '{"type": "session", "session": {"state": "live", "token_sha256": "abc"}}',
            "invalid session",
        ),
        ('{"type": "whep_answer", "req": "a b", "status": 201}', "invalid req"),
        ('{"type": "health", "seq": 1, "sent_at": 0, "report": {}, "extra": 1}', "invalid"),
    ],
)
def test_malformed_kit_messages(wire: str | bytes, reason: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_kit_message(wire)
    assert caught.value.code == CLOSE_MALFORMED
    assert caught.value.reason.startswith(reason), caught.value.reason
    assert len(caught.value.reason.encode()) <= 123


def test_reason_never_echoes_values() -> None:
    secret = "do-not-echo-" + "x" * 20
    wire = json.dumps(
        {"type": "hello", "v": 1, "kit_id": "bad id!", "secret": secret, "software": "s"}
    )
    with pytest.raises(ProtocolError) as caught:
        parse_kit_message(wire)
    assert secret not in caught.value.reason and "bad id" not in caught.value.reason


def test_too_big() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_kit_message(b" " * (MAX_MESSAGE_BYTES + 1))
    assert caught.value.code == CLOSE_TOO_BIG


def test_layers_most_specific_wins_and_version_is_canonical() -> None:
    fleet = {"camera": {"fps": 30, "bitrate_kbps": 2000}, "kiosk": {"language": "fr"}}
    school = {"camera": {"fps": 15}, "webrtc": {"ice_servers": [{"urls": ["stun:a"]}]}}
    kit = {"webrtc": {"ice_servers": [{"urls": ["turn:b"], "username": "u", "credential": "c"}]}}
    merged = merge_layers(fleet, school, kit)
    assert merged == {
        "camera": {"fps": 15, "bitrate_kbps": 2000},
        "kiosk": {"language": "fr"},
        "webrtc": {"ice_servers": [{"urls": ["turn:b"], "username": "u", "credential": "c"}]},
    }
    assert fleet == {"camera": {"fps": 30, "bitrate_kbps": 2000}, "kiosk": {"language": "fr"}}
    assert config_version({"a": 1, "b": {"c": 2}}) == config_version({"b": {"c": 2}, "a": 1})
    assert len(config_version({})) == 16
    ConfigAck(version=config_version(merged), status="applied")


def test_budget_lets_a_reconnecting_kit_send_its_whole_backlog() -> None:
    """The largest legitimate burst: 360 queued reports, then 60 pupils' answers, all at once."""
    budget = MessageBudget(now=0.0)
    for _ in range(360):
        budget.spend(1500, now=0.0)
    for _ in range(60):
        budget.spend(6000, now=0.0)
    for second in range(1, 3600):  # then an hour of reports and joins, well within the rate
        budget.spend(1500, now=float(second))


def test_budget_stops_a_flood_and_refills_with_time() -> None:
    budget = MessageBudget(now=100.0, burst=10, rate=2)
    for _ in range(10):
        budget.spend(100, now=100.0)
    with pytest.raises(ProtocolError) as caught:
        budget.spend(100, now=100.0)
    assert caught.value.code == CLOSE_TOO_FAST and caught.value.reason == "too many messages"
    fresh = MessageBudget(now=0.0, burst=10, rate=2)
    for _ in range(10):
        fresh.spend(100, now=0.0)
    fresh.spend(100, now=0.5)  # one unit back after half a second
    with pytest.raises(ProtocolError):
        fresh.spend(100, now=0.5)
    fresh.spend(100, now=1000.0)  # refilled, but never beyond the burst
    assert fresh._level <= 10


def test_budget_charges_big_frames_by_size() -> None:
    budget = MessageBudget(now=0.0, burst=40, rate=0)
    budget.spend(MAX_MESSAGE_BYTES - 1, now=0.0)  # 16 units
    budget.spend(MAX_MESSAGE_BYTES - 1, now=0.0)  # 32
    with pytest.raises(ProtocolError):
        budget.spend(MAX_MESSAGE_BYTES - 1, now=0.0)
