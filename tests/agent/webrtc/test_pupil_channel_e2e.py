"""The pupil data channel between a real aiortc peer and the agent (docs/pupil-channel.md)."""

from __future__ import annotations

import json
import logging

import pytest

from tests.conftest import LiveAgent, until


async def joined(agent: LiveAgent) -> object:
    pupil = agent.receiver(await agent.start(), data_channel=True)
    await pupil.connect()
    await until(lambda: pupil.channel.readyState == "open", 10, "channel open")
    await until(lambda: pupil.messages, 5, "welcome")
    assert pupil.messages[0] == {
        "type": "welcome",
        "version": 3,
        "fps": {
            "camera": agent.session.config.camera.fps,
            "document": agent.session.config.document.fps,
        },
        "admitted": True,
    }
    return pupil


async def test_name_hand_and_lowering_by_the_teacher(agent: LiveAgent) -> None:
    pupil = await joined(agent)
    pupil.channel.send(json.dumps({"type": "name", "name": " Noé\u0000 "}))
    pupil.channel.send(json.dumps({"type": "hand", "raised": True}))
    await until(lambda: any(p["hand_raised_at"] for p in agent.session.pupils()), 5, "hand up")
    (entry,) = agent.session.pupils()
    assert entry["name"] == "Noé" and entry["connected"] is True

    async with agent.http.post(f"{agent.base_url}/api/pupils/{entry['id']}/lower-hand") as r:
        assert r.status == 200
    await until(lambda: {"type": "hand", "raised": False} in pupil.messages, 5, "told")
    assert agent.session.pupils()[0]["hand_raised_at"] is None

    # Taking the hand back from the page works the same way.
    pupil.channel.send(json.dumps({"type": "hand", "raised": True}))
    await until(lambda: agent.session.pupils()[0]["hand_raised_at"], 5, "raised again")
    pupil.channel.send(json.dumps({"type": "hand", "raised": False}))
    await until(lambda: not agent.session.pupils()[0]["hand_raised_at"], 5, "taken back")


async def test_bad_messages_get_an_error_and_the_session_lives_on(
    agent: LiveAgent, caplog: pytest.LogCaptureFixture
) -> None:
    pupil = await joined(agent)
    bad = ["not json", b"\xff\x00", "[]", '{"type":"hand","raised":"yes"}', '{"type":"x"}']
    bad += ['{"type":"name","name":"' + "a" * 5000 + '"}'] * 10
    with caplog.at_level(logging.INFO, "agent.webrtc"):
        for message in bad:
            pupil.channel.send(message)

        def replies() -> list[dict[str, object]]:
            """The kit may also tell the page its quality at any time: not a reply."""
            return [m for m in pupil.messages[1:] if m["type"] != "quality"]

        await until(lambda: len(replies()) == len(bad), 10, "an error for each")
    assert all(m["type"] == "error" and m["reason"] for m in replies())
    assert len([r for r in caplog.records if "bad data channel" in r.message]) == 5
    pupil.channel.send(json.dumps({"type": "hand", "raised": True}))
    await until(lambda: agent.session.pupils()[0]["hand_raised_at"], 5, "still works")
    await pupil.wait_frames("camera", 10)


async def test_stop_tells_the_page_the_class_ended(agent: LiveAgent) -> None:
    pupil = await joined(agent)
    await agent.stop()
    assert {"type": "ended"} in pupil.messages


async def test_another_channel_is_closed(agent: LiveAgent) -> None:
    pupil = await joined(agent)
    other = pupil.pc.createDataChannel("something-else")
    # A channel opened after the answer is negotiated in-band (DCEP) on the same SCTP link.
    await until(lambda: other.readyState == "closed", 10, "refused")
    assert pupil.channel.readyState == "open"
