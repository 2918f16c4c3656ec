"""A pupil flooding the data channel (docs/pupil-channel.md, "Budget"): before, each of 1,100
raise/lower messages a second was logged; now the kit logs changes of state only, drops what
is over the budget and closes a channel that keeps flooding, while the video goes on."""

from __future__ import annotations

import json
import logging

import pytest

from agent.webrtc.pupil_channel import CLOSED_FOR_FLOODING, TOO_MANY_MESSAGES
from tests.conftest import LiveAgent, until

from .test_pupil_channel_e2e import joined


async def test_a_flood_is_cut_without_flooding_the_log(
    agent: LiveAgent, caplog: pytest.LogCaptureFixture
) -> None:
    pupil = await joined(agent)
    with caplog.at_level(logging.INFO, "agent"):
        for number in range(1100):
            pupil.channel.send(json.dumps({"type": "hand", "raised": number % 2 == 0}))
        await until(lambda: pupil.channel.readyState == "closed", 10, "channel closed by the kit")
    logged = [r for r in caplog.records if r.name.startswith("agent")]
    assert len(logged) < 30, [r.getMessage() for r in logged]
    assert sum("hand" in r.getMessage() for r in logged) <= 20  # the burst, not 1,100
    assert sum("closing it" in r.getMessage() for r in logged) == 1
    errors = [m["reason"] for m in pupil.messages if m["type"] == "error"]
    assert errors == [TOO_MANY_MESSAGES, CLOSED_FOR_FLOODING]  # told once each, not per message
    await pupil.wait_frames("camera", 10)  # the pupil still watches the class
    assert agent.session.pupils()[0]["connected"] is True


async def test_repeated_messages_log_nothing_new(
    agent: LiveAgent, caplog: pytest.LogCaptureFixture
) -> None:
    pupil = await joined(agent)
    with caplog.at_level(logging.INFO, "agent"):
        for _ in range(10):
            pupil.channel.send(json.dumps({"type": "hand", "raised": True}))
        pupil.channel.send(json.dumps({"type": "name", "name": "Léa"}))
        await until(lambda: agent.session.pupils()[0]["name"] == "Léa", 5, "name")
    hands = [r for r in caplog.records if "hand" in r.getMessage()]
    assert len(hands) == 1, [r.getMessage() for r in hands]
    assert not [m for m in pupil.messages if m["type"] == "error"]
