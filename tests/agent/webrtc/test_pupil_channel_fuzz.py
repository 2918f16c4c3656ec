"""Fuzzing the pupil data channel (agent/webrtc/pupil_channel.py): whatever a page sends, the
parser returns an event or raises ProtocolError, fast and small; the message budget keeps its
promise for any arrival times (clock injected)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from agent.errors import ProtocolError
from agent.webrtc import pupil_channel as pc
from agent.webrtc.pupil_channel import MessageBudget, Verdict
from tests.fuzz import ODD_TEXT, bounded, network_bytes

VALID = [
    {"type": "hand", "raised": True},
    {"type": "hand", "raised": False},
    {"type": "name", "name": "Léa"},
    {"type": "name", "name": None},
    {"type": "question", "text": "Pourquoi le ciel est-il bleu ?"},
    {"type": "floor_release"},
    {"type": "mic", "state": "on"},
    {"type": "mic", "state": "insecure"},
]
SEEDS = [json.dumps(m).encode() for m in VALID]


def check(data: str | bytes) -> None:
    with bounded(seconds=0.5, megabytes=4):
        try:
            event = pc.parse_pupil_message(data)
        except ProtocolError as exc:
            assert str(exc) and len(str(exc)) < 100
            return
    assert isinstance(event, pc.SetName | pc.SetHand | pc.Ask | pc.ReleaseFloor | pc.MicState)
    if isinstance(event, pc.MicState):
        assert event.state in pc.MIC_STATES
    if isinstance(event, pc.Ask):
        assert 0 < len(event.text) <= 280
        assert event.text == event.text.strip() and event.text.isprintable()
    if isinstance(event, pc.SetName) and event.name is not None:
        assert 0 < len(event.name) <= pc.MAX_NAME_CHARS
        assert event.name == event.name.strip() and event.name.isprintable()


@given(network_bytes(SEEDS, VALID, max_size=pc.MAX_MESSAGE_BYTES))
def test_any_bytes(data: bytes) -> None:
    check(data)


@given(ODD_TEXT.map(lambda name: json.dumps({"type": "name", "name": name})))
def test_any_name(text: str) -> None:
    check(text)
    check(text.encode())


@given(st.text(max_size=2000))
def test_any_text(text: str) -> None:
    check(text)


def test_deep_nesting_is_refused_cleanly() -> None:
    for data in (b"[" * 1000 + b"]" * 24, b'{"a":' * 200, "[" * 1020):
        check(data)


# -- the budget --------------------------------------------------------------------------------


def test_budget_states_change_once_each() -> None:
    budget = MessageBudget(0.0, burst=3, rate=1.0, close_after=5)
    verdicts = [budget.admit(0.0) for _ in range(8)]
    assert verdicts == [Verdict.ACCEPT] * 3 + [Verdict.START_DROPPING] + [Verdict.DROP] * 3 + [
        Verdict.CLOSE
    ]
    assert budget.admit(100.0) is Verdict.DROP  # closed stays closed


def test_budget_resumes_after_a_pause() -> None:
    budget = MessageBudget(0.0, burst=2, rate=1.0, close_after=50)
    assert [budget.admit(0.0) for _ in range(3)][-1] is Verdict.START_DROPPING
    assert budget.admit(1.0) is Verdict.RESUME
    assert budget.admit(2.0) is Verdict.ACCEPT


def test_a_human_never_gets_closed() -> None:
    """Eight clicks a second for a minute (no hand is faster) drops some, never closes."""
    budget = MessageBudget(0.0)
    verdicts = [budget.admit(i / 8) for i in range(8 * 60)]
    assert Verdict.CLOSE not in verdicts


def test_a_script_is_closed_within_a_second() -> None:
    budget = MessageBudget(0.0)
    verdicts = [budget.admit(i / 1100) for i in range(1100)]
    assert Verdict.CLOSE in verdicts[:300]


@given(
    st.lists(st.floats(0, 10, allow_nan=False), max_size=400),
    st.floats(1, 50),
    st.floats(0.1, 20),
)
def test_budget_never_admits_more_than_promised(
    gaps: list[float], burst: float, rate: float
) -> None:
    budget = MessageBudget(0.0, burst=burst, rate=rate, close_after=100)
    now, admitted, changes, dropping = 0.0, 0, 0, False
    for gap in gaps:
        now += gap
        verdict = budget.admit(now)
        admitted += verdict in (Verdict.ACCEPT, Verdict.RESUME)
        assert admitted <= burst + rate * now + 1e-6
        if verdict is Verdict.START_DROPPING:
            assert not dropping
            dropping, changes = True, changes + 1
        elif verdict is Verdict.RESUME:
            assert dropping
            dropping = False
        if verdict is Verdict.CLOSE:
            assert budget.closed
    assert budget.admit(now - 5) in set(Verdict)  # a clock stepping back is harmless


@given(ODD_TEXT.map(lambda text: json.dumps({"type": "question", "text": text})))
def test_any_question(text: str) -> None:
    check(text)
    check(text.encode())
