"""The waiting room with a real aiortc pupil: a waiting pupil is connected, its data channel
works, and not one media packet leaves the kit for it until the teacher admits it."""

from __future__ import annotations

import asyncio
import json

from tests.conftest import LiveAgent, until


async def test_a_waiting_pupil_gets_no_media_until_admitted(agent: LiveAgent) -> None:
    agent.session.set_waiting_room(True)  # idle: for the next class
    pupil = agent.receiver(await agent.start(), data_channel=True)
    await pupil.connect()
    await until(lambda: pupil.messages, 10, "welcome")
    assert pupil.messages[0]["type"] == "welcome" and pupil.messages[0]["admitted"] is False
    (viewer,) = agent.session.viewers.values()
    await until(lambda: viewer.state == "connected", 10, "connected")

    # The page may give its name; its hand and questions wait for admission.
    pupil.channel.send(json.dumps({"type": "name", "name": "Noé"}))
    pupil.channel.send(json.dumps({"type": "question", "text": "Je peux entrer ?"}))
    await until(lambda: any(m["type"] == "error" for m in pupil.messages), 5, "refused")
    await until(lambda: agent.session.pupils()[0]["name"] == "Noé", 5, "name")
    assert agent.session.pupils()[0]["admitted"] is False
    assert agent.session.class_status()["questions"] == []

    await asyncio.sleep(1.5)  # the absence of packets, over time enough for 20+ frames
    assert [t.rtp_packets for t in viewer.tracks] == [0, 0, 0]
    assert viewer.control.pacer.padding_bytes == 0
    assert all(stats.frames == 0 for stats in pupil.tracks.values())

    async with agent.http.post(f"{agent.base_url}/api/pupils/{viewer.id}/admit") as response:
        assert response.status == 200
    await pupil.wait_frames("camera", 5)
    await pupil.wait_frames("microphone", 5)
    assert {"type": "admitted"} in pupil.messages
    events = [e["event"] for e in agent.session.audit()]
    assert events[:2] == ["knocked", "admitted"]
    assert agent.session.audit()[1]["name"] == "Noé"

    await agent.session.stop()
    assert agent.session.audit() == [] and agent.session.classroom is None
