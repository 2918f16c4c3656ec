"""One side of one server link, sans-I/O (after python-websockets' ``Protocol``): frames in,
events out; messages in, frames out. The clock is passed in; nothing here sleeps or touches a
socket.

A driver (``agent/link/client.py`` for the kit, ``provisioning/link.py`` for the server):

* feeds every text frame to :meth:`receive_text` (binary ones to :meth:`receive_binary`) and
  acts on the message it returns (the message *is* the event, as in h11);
* turns every message it wants to send into a frame with :meth:`send` (which refuses a message
  its side may not send now, with :exc:`LocalProtocolError`);
* waits no longer than :attr:`deadline`, then calls :meth:`check_timeout`;
* reports the peer's close frame to :meth:`receive_close`, which says whether it is final;
* on :exc:`~kitlink.rules.ProtocolError` closes the socket with its ``code`` and ``reason``.

The rules themselves (order, timeouts, close codes) are :mod:`kitlink.rules`' tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from kitsys.errors import KitError

from .messages import (
    AnyKitMessage,
    AnyServerMessage,
    Hello,
    MessageBudget,
    Welcome,
    encode,
    parse_kit_message,
    parse_server_message,
)
from .rules import (
    BUDGETED,
    CLOSE_ABNORMAL,
    CLOSE_MALFORMED,
    CLOSE_TIMEOUT,
    CLOSE_VERSION,
    FEATURE_MESSAGES,
    FINAL_CLOSE_CODES,
    RECEIVES,
    SENDS,
    TIMEOUTS,
    VERSION,
    ProtocolError,
    Side,
    State,
    out_of_order_reason,
)

_VERSION_EXPECTED = f"protocol version {VERSION} expected"


class LocalProtocolError(KitError, RuntimeError):
    """This side tried to send a message its state does not allow (a bug in the driver, or the
    link already closed). A ``RuntimeError``, so senders that treat a closed link as one keep
    doing so."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The link is closed (by the peer, or by this side). ``final``: the kit must not redial."""

    code: int
    reason: str
    final: bool


class _Connection:
    side: Side

    def __init__(self, now: float, timeout_s: float | None = None) -> None:
        self.state = State.CONNECTING if self.side is Side.KIT else State.AWAIT_HELLO
        self._entered_at = now
        self._timeout_s = timeout_s
        self.closed: Closed | None = None
        self.budget: MessageBudget | None = None

    def _enter(self, state: State, now: float) -> None:
        self.state = state
        self._entered_at = now

    @property
    def deadline(self) -> float | None:
        """When :meth:`check_timeout` fails if the state has not changed (None: never)."""
        rule = TIMEOUTS.get((self.side, self.state))
        if rule is None:
            return None
        timeout_s = self._timeout_s if self._timeout_s is not None else rule[0]
        return self._entered_at + timeout_s

    def check_timeout(self, now: float) -> None:
        """Raise :exc:`ProtocolError` (:data:`CLOSE_TIMEOUT`) once past :attr:`deadline`."""
        deadline = self.deadline
        if deadline is not None and now >= deadline:
            raise self.fail(ProtocolError(CLOSE_TIMEOUT, TIMEOUTS[(self.side, self.state)][1]))

    def fail(self, exc: ProtocolError) -> ProtocolError:
        """This side closes the link for ``exc``; returns it (to raise)."""
        self._close(exc.code, exc.reason)
        return exc

    def receive_binary(self, data: bytes) -> None:
        """Binary frames are not part of the protocol: always raises."""
        raise self.fail(ProtocolError(CLOSE_MALFORMED, "frames must be JSON text"))

    def receive_close(self, code: int | None, reason: str = "") -> Closed:
        """The peer closed the link (``code`` None: without a close frame)."""
        return self._close(code if code is not None else CLOSE_ABNORMAL, reason)

    def _close(self, code: int, reason: str) -> Closed:
        if self.closed is None:
            self.closed = Closed(code, reason, code in FINAL_CLOSE_CODES)
            self.state = State.CLOSED
        return self.closed

    def _charge(self, data: str | bytes, now: float) -> None:
        if self.side in BUDGETED and self.budget is not None and self.state is State.OPEN:
            try:
                self.budget.spend(len(data), now)
            except ProtocolError as exc:
                raise self.fail(exc) from None

    def _check_order(self, kind: str) -> None:
        if kind not in RECEIVES[self.side].get(self.state, frozenset()):
            reason = out_of_order_reason(self.side, self.state, kind)
            raise self.fail(ProtocolError(CLOSE_MALFORMED, reason))

    def _may_send(self, message: BaseModel) -> str:
        kind = str(getattr(message, "type", ""))
        if kind not in SENDS[self.side].get(self.state, frozenset()):
            raise LocalProtocolError(f"the {self.side.value} may not send {kind} when {self.state}")
        return kind


class KitConnection(_Connection):
    """The kit's side: says hello, waits for the welcome, then takes the server's messages."""

    side = Side.KIT

    def __init__(self, now: float, welcome_timeout_s: float | None = None) -> None:
        super().__init__(now, welcome_timeout_s)
        self.welcome: Welcome | None = None

    def hello(self, hello: Hello, now: float) -> str:
        """The first frame of a link (its state becomes ``HELLO_SENT``)."""
        self._may_send(hello)
        self._enter(State.HELLO_SENT, now)
        return encode(hello)

    def receive_text(self, data: str | bytes, now: float) -> AnyServerMessage:
        """One frame from the server; raises :exc:`ProtocolError` when it breaks the rules."""
        try:
            message = parse_server_message(data)
        except ProtocolError as exc:
            raise self.fail(exc) from None
        self._check_order(message.type)
        if isinstance(message, Welcome):
            self.welcome = message
            self._enter(State.OPEN, now)
        return message

    def send(self, message: AnyKitMessage) -> str:
        """The frame for ``message``, which the kit may send only once welcomed."""
        self._may_send(message)
        return encode(message)


class ServerConnection(_Connection):
    """The server's side: waits for the hello, lets the server welcome or refuse it, then takes
    the kit's messages, each charged to the kit's :class:`MessageBudget`."""

    side = Side.SERVER

    def __init__(
        self,
        now: float,
        hello_timeout_s: float | None = None,
        budget: Callable[[float], MessageBudget] = MessageBudget,
    ) -> None:
        super().__init__(now, hello_timeout_s)
        self._make_budget = budget
        self.hello: Hello | None = None

    def receive_text(self, data: str | bytes, now: float) -> AnyKitMessage:
        """One frame from the kit; raises :exc:`ProtocolError` when it breaks the rules."""
        if self.state is State.AUTHENTICATING:
            raise LocalProtocolError("welcome or refuse the hello before reading on")
        self._charge(data, now)
        try:
            message = parse_kit_message(data)
        except ProtocolError as exc:
            if self.state is State.AWAIT_HELLO and _other_version_hello(data):
                raise self.fail(ProtocolError(CLOSE_VERSION, _VERSION_EXPECTED)) from None
            raise self.fail(exc) from None
        self._check_order(message.type)
        if isinstance(message, Hello):
            if message.v != VERSION:
                raise self.fail(ProtocolError(CLOSE_VERSION, _VERSION_EXPECTED))
            self.hello = message
            self._enter(State.AUTHENTICATING, now)
        return message

    def accept(self, welcome: Welcome, now: float) -> str:
        """Welcome the kit whose hello was received: the frame to send; the link is open and
        every frame from now on is charged to a fresh budget."""
        self._may_send(welcome)
        self.budget = self._make_budget(now)
        self._enter(State.OPEN, now)
        return encode(welcome)

    def refuse(self, code: int, reason: str) -> ProtocolError:
        """Refuse the hello (unknown kit, revoked credential…): the error to close with."""
        return self.fail(ProtocolError(code, reason))

    def send(self, message: AnyServerMessage) -> str:
        """The frame for ``message``: only once the kit is welcomed, and a feature's message
        only to a kit whose hello listed that feature."""
        kind = self._may_send(message)
        feature = FEATURE_MESSAGES.get(kind)
        if feature is not None and (self.hello is None or feature not in self.hello.features):
            raise LocalProtocolError(f"this kit did not say it understands {kind}")
        return encode(message)


def _other_version_hello(data: str | bytes) -> bool:
    """A hello that fails validation only because it is another protocol version's: told so
    with :data:`CLOSE_VERSION` rather than as a malformed frame."""
    if b'"hello"' not in (data if isinstance(data, bytes) else data.encode()):
        return False
    try:
        value = json.loads(data)
    except ValueError:
        return False
    return (
        isinstance(value, dict)
        and value.get("type") == "hello"
        and "v" in value
        and value["v"] != VERSION
    )
