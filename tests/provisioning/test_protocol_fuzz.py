"""Fuzzing the link protocol's parsers, both directions (kitlink/messages.py
``parse_kit_message`` on the server, ``parse_server_message`` on the kit).

Inputs: a valid message of every type, mutated byte by byte and value by value (any JSON
value, odd unicode, huge and non-finite numbers, deep nesting, unknown keys). Every input must
give a message or a :class:`ProtocolError` whose close code is documented and whose reason fits
a WebSocket close frame (123 bytes); an accepted message must encode back to strict JSON (no
``NaN``/``Infinity``, which a browser's JSON.parse refuses) that parses to the same message.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given

from kitlink import (
    CLOSE_MALFORMED,
    CLOSE_TOO_BIG,
    MAX_MESSAGE_BYTES,
    ProtocolError,
    encode,
    parse_kit_message,
    parse_server_message,
)
from tests.fuzz import bounded, network_bytes, strict_json

from .test_protocol import REPORT

HEX64 = "ab" * 32
KIT_MESSAGES: list[dict[str, Any]] = [
    {"type": "hello", "v": 1, "kit_id": "kit-0a1b2c3d4e5f", "secret": "s" * 43,
     "software": "0.1.0", "config_version": "0123456789abcdef",
     "session": {"state": "live", "token_sha256": HEX64}},
    {"type": "health", "seq": 7, "sent_at": 1700000000.25, "report": REPORT,
     "queued": True, "dropped": 3},
    {"type": "config_ack", "version": "0123456789abcdef", "status": "refused",
     "reason": "camera.fps: too high"},
    {"type": "session", "session": {"state": "idle", "token_sha256": None}},
    {"type": "whep_answer", "req": "r1", "status": 201, "resource": "res-1",
     "sdp": "v=0\r\n", "error": "", "class_state": None},
    {"type": "whep_answer", "req": "r2", "status": 404, "error": "ended", "class_state": "ended"},
    {"type": "whep_deleted", "req": "r3", "status": 200, "error": ""},
]  # fmt: skip
SERVER_MESSAGES: list[dict[str, Any]] = [
    {"type": "welcome", "v": 1, "kit_id": "kit-1", "name": "Salle 1", "health_interval_s": 10.0,
     "server_time": 1.5},
    {"type": "config", "version": "0123456789abcdef", "config": {
        "camera": {"width": 1280, "height": 720, "fps": 30, "bitrate_kbps": 2000},
        "microphone": {"bitrate_kbps": 48},
        "webrtc": {"ice_servers": [{"urls": ["turn:turn.example.fr:3478"], "username": "u",
                                     "credential": "c"}]},
        "kiosk": {"language": "fr"}}},
    {"type": "whep_offer", "req": "r1", "token": "tok", "sdp": "v=0\r\n"},
    {"type": "whep_delete", "req": "r1", "resource": "res-1"},
]  # fmt: skip


def _seeds(messages: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(m, separators=(",", ":")).encode() for m in messages]


def check(parse: Any, data: bytes | str) -> None:
    with bounded(seconds=1.0, megabytes=32):
        try:
            message = parse(data)
        except ProtocolError as exc:
            assert exc.code in (CLOSE_MALFORMED, CLOSE_TOO_BIG)
            assert exc.reason and len(exc.reason.encode()) <= 123, exc.reason
            return
    wire = encode(message)
    strict_json(wire)
    assert parse(wire) == message


@given(network_bytes(_seeds(KIT_MESSAGES), KIT_MESSAGES, max_size=MAX_MESSAGE_BYTES))
def test_kit_messages(data: bytes) -> None:
    check(parse_kit_message, data)


@given(network_bytes(_seeds(SERVER_MESSAGES), SERVER_MESSAGES, max_size=MAX_MESSAGE_BYTES))
def test_server_messages(data: bytes) -> None:
    check(parse_server_message, data)


def test_seeds_are_valid() -> None:
    for message in KIT_MESSAGES:
        assert encode(parse_kit_message(json.dumps(message))) is not None
    for message in SERVER_MESSAGES:
        assert encode(parse_server_message(json.dumps(message))) is not None


def test_non_finite_numbers_are_refused() -> None:
    """``1e999`` is JSON for infinity to Python; pydantic took it (and NaN), and the server
    then stored "null" and fed infinity to its latency figures."""
    for number in ("1e999", "-1e999", "NaN", "Infinity"):
        wire = json.dumps(KIT_MESSAGES[1]).replace("12.5", number)
        try:
            parse_kit_message(wire)
        except ProtocolError as exc:
            assert exc.code == CLOSE_MALFORMED
        else:
            raise AssertionError(f"{number} accepted")


def test_close_reasons_fit_a_close_frame() -> None:
    """An unknown key is named in the reason: in any script it must fit in 123 bytes."""
    wire = json.dumps({**KIT_MESSAGES[3], "é" * 200: 1}, ensure_ascii=False)
    try:
        parse_kit_message(wire)
    except ProtocolError as exc:
        assert len(exc.reason.encode()) <= 123
    else:
        raise AssertionError("accepted")
