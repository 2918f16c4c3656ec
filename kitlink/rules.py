"""Every rule of the server link in one place: versions and sizes, close codes, timeouts, and the
table of which message each side may send in each state (after h11's ``_state.py``).

No I/O and no message models here: :mod:`kitlink.messages` validates what a frame says,
:mod:`kitlink.connection` applies these rules to a link. docs/protocol.md is the prose version.

The link's life, on both sides::

    kit                                     server
    ───                                     ──────
    CONNECTING                              AWAIT_HELLO   (HELLO_TIMEOUT_S, else 4408)
    HELLO_SENT   ── hello ─────────────▶
    (WELCOME_TIMEOUT_S, else 4408)
                                            AUTHENTICATING  (the server checks the credential:
                                                             refuses with 4401/4403/4426, or)
    OPEN         ◀──────────── welcome ──   OPEN
    OPEN         ◀── config, ice_servers, stored, whep_offer, whep_delete ──  OPEN
    OPEN         ── health, config_ack, session, whep_answer, whep_deleted ──▶  OPEN
    CLOSED       (either side, with a close code)  CLOSED

The kit waits at most :data:`WELCOME_TIMEOUT_S` for the welcome. A message not allowed in a
state, a frame that is not JSON text, or one that fails validation closes the link with
:data:`CLOSE_MALFORMED`; a kit that floods is closed with :data:`CLOSE_TOO_FAST`. After a
close code in :data:`FINAL_CLOSE_CODES` the kit stops dialling.
"""

from __future__ import annotations

import enum

from kitsys.errors import ProtocolError as _SharedProtocolError

VERSION = 1
LINK_PATH = "/link/v1"
ENROLL_PATH = "/api/v1/enroll"
MAX_MESSAGE_BYTES = 128 * 1024
"""Largest frame either side accepts (an SDP offer is at most 64 KiB, plus the envelope)."""
HELLO_TIMEOUT_S = 10.0
"""How long the server waits for a new link's hello (then :data:`CLOSE_TIMEOUT`): a socket that
says nothing costs the server a connection slot."""
WELCOME_TIMEOUT_S = 20.0
"""How long the kit waits for the welcome (then :data:`CLOSE_TIMEOUT`, and it redials): twice
the server's hello timeout, so a slow server's refusal arrives before the kit gives up."""
BUDGET_UNIT_BYTES = 8 * 1024
"""A frame costs one unit of its kit's :class:`~kitlink.messages.MessageBudget` per started
8 KiB."""

# WebSocket close codes (RFC 6455 private range 4000-4999 mirrors HTTP status codes).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_ABNORMAL = 1006
"""Never sent: the connection ended without a close frame."""
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_MALFORMED = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_REVOKED = 4403
CLOSE_TIMEOUT = 4408
CLOSE_REPLACED = 4409
CLOSE_VERSION = 4426
CLOSE_TOO_FAST = 4429

FINAL_CLOSE_CODES = frozenset({CLOSE_UNAUTHORIZED, CLOSE_REVOKED, CLOSE_VERSION})
"""After these the agent stops dialling: retrying cannot succeed without an admin's action."""

MAX_REASON_BYTES = 120
"""A close reason must fit in 123 bytes of UTF-8 (it may name a peer's non-ASCII key)."""


class ProtocolError(_SharedProtocolError):
    """A frame (or a silence) that breaks the link protocol; ``code`` and ``reason`` go into the
    close frame. The reason never echoes a value the peer sent."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


class State(enum.Enum):
    """Where one side of a link stands (the same names on both sides)."""

    CONNECTING = "connecting"
    """Kit: the socket is open, the hello not sent yet."""
    AWAIT_HELLO = "await_hello"
    """Server: the socket is open, no hello yet."""
    AUTHENTICATING = "authenticating"
    """Server: hello received; the server decides to welcome or refuse."""
    HELLO_SENT = "hello_sent"
    """Kit: hello sent, no welcome yet."""
    OPEN = "open"
    CLOSED = "closed"


class Side(enum.Enum):
    KIT = "kit"
    SERVER = "server"


KIT_TYPES = frozenset({"hello", "health", "config_ack", "session", "whep_answer", "whep_deleted"})
SERVER_TYPES = frozenset(
    {"welcome", "config", "ice_servers", "stored", "whep_offer", "whep_delete"}
)
_KIT_AFTER_WELCOME = KIT_TYPES - {"hello"}
_SERVER_AFTER_WELCOME = SERVER_TYPES - {"welcome"}

SENDS: dict[Side, dict[State, frozenset[str]]] = {
    Side.KIT: {
        State.CONNECTING: frozenset({"hello"}),
        State.HELLO_SENT: frozenset(),
        State.OPEN: _KIT_AFTER_WELCOME,
    },
    Side.SERVER: {
        State.AWAIT_HELLO: frozenset(),
        State.AUTHENTICATING: frozenset({"welcome"}),
        State.OPEN: _SERVER_AFTER_WELCOME,
    },
}
"""Which message types each side may send in each of its states (a state not listed: none).
The kit's hello moves it to HELLO_SENT, the server's welcome moves it to OPEN."""

RECEIVES: dict[Side, dict[State, frozenset[str]]] = {
    Side.SERVER: {State.AWAIT_HELLO: frozenset({"hello"}), State.OPEN: _KIT_AFTER_WELCOME},
    Side.KIT: {State.HELLO_SENT: frozenset({"welcome"}), State.OPEN: _SERVER_AFTER_WELCOME},
}
"""Which message types each side accepts in each state; any other closes the link with
:data:`CLOSE_MALFORMED` and the reason in :data:`OUT_OF_ORDER`."""

OUT_OF_ORDER: dict[tuple[Side, State, str], str] = {
    (Side.SERVER, State.AWAIT_HELLO, "*"): "the first message must be hello",
    (Side.SERVER, State.OPEN, "hello"): "hello is only the first message",
    (Side.KIT, State.HELLO_SENT, "*"): "the first message must be welcome",
    (Side.KIT, State.OPEN, "welcome"): "welcome is only the first message",
}
"""The close reason for a message that comes out of order (``*``: any type)."""

TIMEOUTS: dict[tuple[Side, State], tuple[float, str]] = {
    (Side.SERVER, State.AWAIT_HELLO): (HELLO_TIMEOUT_S, "no hello in time"),
    (Side.KIT, State.HELLO_SENT): (WELCOME_TIMEOUT_S, "no welcome in time"),
}
"""How long a side may stay in a state, and the reason of the :data:`CLOSE_TIMEOUT` close."""

FEATURE_ICE_SERVERS = "ice_servers"
"""A kit that lists it in its hello takes ``ice_servers`` (and the server its health report's
``network``)."""
FEATURE_NETWORK_CONFIG = "network_config"
"""A kit that lists it takes a pushed configuration's ``network`` section (the school's uplink
budget); the server leaves that section out of the pushes to other kits."""
FEATURE_STORED_ACK = "stored_ack"
"""A kit that lists it gets ``stored`` (its reports committed up to a time) and sends again,
after a reconnect, the reports it sent that were never acknowledged: a server node that dies
with reports in its write queue loses none (the history stores each report once)."""
FEATURE_CLASS_CONTROL = "class_control"
"""A kit that lists it has the waiting room, removal and lock (issue 17): the server sends it
the pupil's rejoin key in ``whep_offer`` (``pupil_key``) and the ``kiosk.waiting_room``
setting in pushes; it answers such an offer with ``class_state`` ``locked`` or ``removed``."""
SERVER_FEATURE_CLASSROOM_HEALTH = "classroom_health"
"""In a welcome's ``features``: the server takes a health report's ``classroom`` section (the
class's admissions, counted)."""
FEATURE_MESSAGES: dict[str, str] = {
    "ice_servers": FEATURE_ICE_SERVERS,
    "stored": FEATURE_STORED_ACK,
}
"""Server messages a kit gets only if its hello listed the feature (message type → feature)."""

BUDGETED = frozenset({Side.SERVER})
"""The sides that charge every received frame to a message budget (the server: a kit, or a
stolen credential, must not flood it)."""


def out_of_order_reason(side: Side, state: State, kind: str) -> str:
    """The close reason when ``side`` in ``state`` receives a ``kind`` it may not."""
    return (
        OUT_OF_ORDER.get((side, state, kind))
        or OUT_OF_ORDER.get((side, state, "*"))
        or f"{kind} is not expected now"
    )
