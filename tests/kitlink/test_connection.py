"""The server link's rules, message in, message out (kitlink/connection.py, kitlink/rules.py):
both sides, with the clock passed in; no socket, no sleep."""

from __future__ import annotations

import json

import pytest

from kitlink import (
    CLOSE_MALFORMED,
    CLOSE_REVOKED,
    CLOSE_TIMEOUT,
    CLOSE_TOO_FAST,
    CLOSE_UNAUTHORIZED,
    CLOSE_VERSION,
    HELLO_TIMEOUT_S,
    WELCOME_TIMEOUT_S,
    Health,
    HealthReport,
    Hello,
    IceServers,
    KitConnection,
    LocalProtocolError,
    MessageBudget,
    ProtocolError,
    PushConfig,
    PushedConfig,
    ServerConnection,
    Session,
    SessionInfo,
    State,
    Stored,
    Welcome,
    WhepOffer,
    encode,
)
from kitsys.errors import KitError
from kitsys.errors import ProtocolError as SharedProtocolError
from tests.provisioning.test_protocol import REPORT

SECRET = "s" * 43
HELLO = Hello(v=1, kit_id="kit-1", secret=SECRET, software="test")
WELCOME = Welcome(kit_id="kit-1", name="Salle 1", health_interval_s=10, server_time=1.0)
HEALTH = Health(seq=0, sent_at=1.0, report=HealthReport.model_validate(REPORT))
SESSION = Session(session=SessionInfo(state="idle"))
CONFIG = PushConfig(version="0123456789abcdef", config=PushedConfig())
OFFER = WhepOffer(req="r1", token="t", sdp="v=0\r\n")


def open_server(now: float = 0.0, hello: Hello = HELLO, **options: object) -> ServerConnection:
    server = ServerConnection(now, **options)  # type: ignore[arg-type]
    assert server.receive_text(encode(hello), now) == hello
    server.accept(WELCOME, now)
    return server


def open_kit(now: float = 0.0) -> KitConnection:
    kit = KitConnection(now)
    kit.hello(HELLO, now)
    kit.receive_text(encode(WELCOME), now)
    return kit


def refused(call: object, *args: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value


def test_a_whole_link_both_sides() -> None:
    """The kit's frames fed to the server and the server's to the kit: the same messages out."""
    kit, server = KitConnection(0.0), ServerConnection(0.0)
    assert (kit.state, server.state) == (State.CONNECTING, State.AWAIT_HELLO)
    assert server.receive_text(kit.hello(HELLO, 0.0), 0.5) == HELLO
    assert (kit.state, server.state) == (State.HELLO_SENT, State.AUTHENTICATING)
    assert kit.receive_text(server.accept(WELCOME, 1.0), 1.0) == WELCOME
    assert kit.state is server.state is State.OPEN and kit.welcome == WELCOME
    assert kit.deadline is None and server.deadline is None
    for message in (HEALTH, SESSION):
        assert server.receive_text(kit.send(message), 2.0) == message
    for message in (CONFIG, OFFER):
        assert kit.receive_text(server.send(message), 2.0) == message
    closed = kit.receive_close(1000, "bye")
    assert (closed.code, closed.final, kit.state) == (1000, False, State.CLOSED)


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (encode(HEALTH), "the first message must be hello"),
        (encode(SESSION), "the first message must be hello"),
        ("{not json", "not valid JSON"),
        ('{"type": "welcome"}', "unknown message type"),
    ],
)
def test_the_server_wants_hello_first(first: str, reason: str) -> None:
    server = ServerConnection(0.0)
    error = refused(server.receive_text, first, 0.0)
    assert error.code == CLOSE_MALFORMED and error.reason.startswith(reason)
    assert server.state is State.CLOSED and server.closed is not None
    assert server.closed.code == CLOSE_MALFORMED and not server.closed.final


def test_binary_frames_are_refused_on_both_sides() -> None:
    for side in (ServerConnection(0.0), open_server(), open_kit()):
        error = refused(side.receive_binary, b"\x00\x01")
        assert (error.code, error.reason) == (CLOSE_MALFORMED, "frames must be JSON text")


def test_hello_timeout_is_the_servers_and_injected() -> None:
    server = ServerConnection(100.0)
    assert server.deadline == 100.0 + HELLO_TIMEOUT_S
    server.check_timeout(100.0 + HELLO_TIMEOUT_S - 0.01)  # not yet
    error = refused(server.check_timeout, 100.0 + HELLO_TIMEOUT_S)
    assert (error.code, error.reason) == (CLOSE_TIMEOUT, "no hello in time")
    short = ServerConnection(0.0, hello_timeout_s=1.0)
    assert short.deadline == 1.0
    short.receive_text(encode(HELLO), 0.9)  # in time: no deadline while authenticating
    assert short.deadline is None
    short.check_timeout(1000.0)


def test_welcome_timeout_is_the_kits() -> None:
    kit = KitConnection(0.0)
    kit.hello(HELLO, 5.0)
    assert kit.deadline == 5.0 + WELCOME_TIMEOUT_S
    error = refused(kit.check_timeout, 5.0 + WELCOME_TIMEOUT_S)
    assert (error.code, error.reason) == (CLOSE_TIMEOUT, "no welcome in time")
    assert kit.closed is not None and kit.closed.code == CLOSE_TIMEOUT


def test_a_second_hello_or_welcome_is_refused() -> None:
    server = open_server()
    error = refused(server.receive_text, encode(HELLO), 1.0)
    assert (error.code, error.reason) == (CLOSE_MALFORMED, "hello is only the first message")
    kit = open_kit()
    error = refused(kit.receive_text, encode(WELCOME), 1.0)
    assert (error.code, error.reason) == (CLOSE_MALFORMED, "welcome is only the first message")


@pytest.mark.parametrize("message", [CONFIG, OFFER, IceServers(ice_servers=[], expires_at=0)])
def test_the_kit_wants_welcome_first(message: PushConfig | WhepOffer | IceServers) -> None:
    kit = KitConnection(0.0)
    kit.hello(HELLO, 0.0)
    error = refused(kit.receive_text, encode(message), 0.0)
    assert (error.code, error.reason) == (CLOSE_MALFORMED, "the first message must be welcome")


def test_other_versions_are_told_so() -> None:
    """A hello of another version is refused with 4426 (not 4400), whether or not it parses."""
    wire = encode(HELLO).replace('"v":1', '"v":2')
    error = refused(ServerConnection(0.0).receive_text, wire, 0.0)
    assert (error.code, error.reason) == (CLOSE_VERSION, "protocol version 1 expected")
    odd = json.dumps({"type": "hello", "v": 2, "kit_id": "kit-1"})  # fails validation too
    assert refused(ServerConnection(0.0).receive_text, odd, 0.0).code == CLOSE_VERSION
    broken = json.dumps({"type": "hello", "kit_id": "kit-1"})  # no version at all
    assert refused(ServerConnection(0.0).receive_text, broken, 0.0).code == CLOSE_MALFORMED


def test_refusals_and_final_close_codes() -> None:
    server = ServerConnection(0.0)
    server.receive_text(encode(HELLO), 0.0)
    error = server.refuse(CLOSE_UNAUTHORIZED, "unknown kit or wrong secret")
    assert error.code == CLOSE_UNAUTHORIZED and server.state is State.CLOSED
    finals = {CLOSE_UNAUTHORIZED: True, CLOSE_REVOKED: True, CLOSE_VERSION: True}
    for code, final in {
        **finals,
        CLOSE_MALFORMED: False,
        CLOSE_TIMEOUT: False,
        1001: False,
    }.items():
        kit = KitConnection(0.0)
        kit.hello(HELLO, 0.0)
        assert kit.receive_close(code, "r").final is final, code
    assert not KitConnection(0.0).receive_close(None).final  # no close frame at all


def test_the_server_charges_the_kits_frames_to_its_budget() -> None:
    server = open_server(budget=lambda now: MessageBudget(now, burst=3, rate=1))
    frame = encode(HEALTH)
    for _ in range(3):
        server.receive_text(frame, 0.0)
    error = refused(server.receive_text, frame, 0.0)
    assert (error.code, error.reason) == (CLOSE_TOO_FAST, "too many messages")
    refill = open_server(budget=lambda now: MessageBudget(now, burst=1, rate=1))
    refill.receive_text(frame, 10.0)
    refill.receive_text(frame, 11.0)  # one unit back after a second of the injected clock


def test_each_side_sends_only_what_it_may_when_it_may() -> None:
    kit = KitConnection(0.0)
    with pytest.raises(LocalProtocolError):
        kit.send(HEALTH)  # before its hello
    kit.hello(HELLO, 0.0)
    with pytest.raises(LocalProtocolError):
        kit.send(SESSION)  # before the welcome
    with pytest.raises(LocalProtocolError):
        kit.hello(HELLO, 0.0)  # twice
    server = ServerConnection(0.0)
    with pytest.raises(LocalProtocolError):
        server.accept(WELCOME, 0.0)  # no hello yet
    with pytest.raises(LocalProtocolError):
        server.send(CONFIG)
    opened = open_server()
    with pytest.raises(LocalProtocolError):
        opened.send(WELCOME)  # welcome is only the first message
    with pytest.raises(LocalProtocolError):
        opened.send(HEALTH)  # type: ignore[arg-type]  # a kit's message
    # A kit's messages are refused while the server decides on its hello: the driver reads on
    # only once it has welcomed or refused.
    deciding = ServerConnection(0.0)
    deciding.receive_text(encode(HELLO), 0.0)
    with pytest.raises(LocalProtocolError):
        deciding.receive_text(encode(HEALTH), 0.0)
    closed = open_kit()
    closed.receive_close(1000)
    with pytest.raises(LocalProtocolError):
        closed.send(HEALTH)


def test_ice_servers_only_to_a_kit_that_said_it_understands_them() -> None:
    ice = IceServers(ice_servers=[], expires_at=0)
    with pytest.raises(LocalProtocolError):
        open_server().send(ice)
    knows = open_server(hello=HELLO.model_copy(update={"features": ["ice_servers"]}))
    assert json.loads(knows.send(ice))["type"] == "ice_servers"


def test_errors_stand_on_the_shared_root() -> None:
    assert issubclass(ProtocolError, SharedProtocolError) and issubclass(ProtocolError, KitError)
    assert issubclass(LocalProtocolError, KitError)
    assert issubclass(LocalProtocolError, RuntimeError)  # senders treat it as a closed link


def test_stored_only_to_a_kit_that_said_it_understands_it() -> None:
    stored = Stored(upto=12.5)
    plain = open_server()
    with pytest.raises(LocalProtocolError):
        plain.send(stored)
    knows = open_server(hello=HELLO.model_copy(update={"features": ["stored_ack"]}))
    assert json.loads(knows.send(stored)) == {"type": "stored", "upto": 12.5}
