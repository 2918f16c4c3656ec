"""Giving a pupil the floor (docs/talkback.md "The floor", docs/pupil-channel.md v3): the
messages bytes in and bytes out, then the kiosk's API with real aiortc pupils on the channel.

The aiortc pupils here offer receive-only audio (bench.whep_receiver); what a page that can send
sound gets is stood in for by ``speaking_viewers`` (``Viewer.can_speak`` true, ``set_floor``
recorded): this tests the rules and the messages, the real browser path is
tests/kiosk/test_floor_in_browsers.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from agent.errors import ProtocolError
from agent.webrtc import pupil_channel as pc
from agent.webrtc.viewer import Viewer
from tests.conftest import LiveAgent, make_agent, until  # noqa: F401  (fixture)


@pytest.mark.parametrize(
    ("data", "event"),
    [
        ('{"type":"floor_release"}', pc.ReleaseFloor()),
        (b'{"type":"mic","state":"on"}', pc.MicState("on")),
        ('{"type":"mic","state":"denied"}', pc.MicState("denied")),
        ('{"type":"mic","state":"unavailable"}', pc.MicState("unavailable")),
        ('{"type":"mic","state":"insecure"}', pc.MicState("insecure")),
        ('{"type":"mic","state":"ready"}', pc.MicState("ready")),
    ],
)
def test_floor_messages_from_the_page(data: str | bytes, event: pc.PupilEvent) -> None:
    assert pc.parse_pupil_message(data) == event


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ('{"type":"floor_release","who":"v2"}', "unknown field 'who'"),
        ('{"type":"floor_release","floor":true}', "unknown field 'floor'"),
        ('{"type":"floor","you":true}', "unknown message type"),  # the kit's, not the page's
        ('{"type":"mic"}', "state must be one of"),
        ('{"type":"mic","state":true}', "state must be one of"),
        ('{"type":"mic","state":"ON"}', "state must be one of"),
        ('{"type":"mic","state":["on"]}', "state must be one of"),
        ('{"type":"mic","state":{"a":{"b":{"c":{"d":1}}}}}', "not JSON"),  # too deep
        ('{"type":"mic","state":"' + "o" * 3000 + '"}', "larger than 2048 bytes"),
        ('{"type":"mic","state":"on","level":0.5}', "unknown field 'level'"),
    ],
)
def test_hostile_floor_messages_are_refused(data: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        pc.parse_pupil_message(data)


def test_floor_messages_from_the_kit() -> None:
    assert pc.floor_message(True, ["Léa"]) == '{"type":"floor","you":true,"holders":["Léa"]}'
    assert pc.floor_message(False, []) == '{"type":"floor","you":false,"holders":[]}'
    assert json.loads(pc.floor_message(False, [None, "Tom"]))["holders"] == [None, "Tom"]
    assert pc.lobby_timeout_message() == '{"type":"lobby_timeout"}'
    assert pc.PROTOCOL_VERSION == 3


@pytest.fixture
def speaking_viewers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, bool]]]:
    """Every viewer can send sound; each ``set_floor`` call is recorded (viewer id, on)."""
    calls: list[tuple[str, bool]] = []

    def set_floor(self: Viewer, on: bool) -> None:
        calls.append((self.id, on))

    def has_floor(self: Viewer) -> bool:
        return any(viewer_id == self.id and on for viewer_id, on in calls[-1:])

    monkeypatch.setattr(Viewer, "can_speak", property(lambda self: True))
    monkeypatch.setattr(Viewer, "set_floor", set_floor)
    monkeypatch.setattr(Viewer, "has_floor", property(has_floor))
    yield calls


def floor_of(pupil: Any) -> list[dict[str, Any]]:
    return [m for m in pupil.messages if m["type"] == "floor"]


async def pupil_in(agent: LiveAgent, whep: str, name: str) -> Any:
    pupil = agent.receiver(whep, data_channel=True)
    await pupil.connect()
    await until(lambda: pupil.channel.readyState == "open", 10, "channel open")
    pupil.channel.send(json.dumps({"type": "name", "name": name}))
    await until(lambda: name in [p["name"] for p in agent.session.pupils()], 5, name)
    return pupil


async def floor(agent: LiveAgent, viewer_id: str, on: Any) -> tuple[int, Any]:
    path = f"{agent.base_url}/api/pupils/{viewer_id}/floor"
    async with agent.http.post(path, json={"floor": on}) as response:
        body = await response.json() if response.status == 200 else await response.text()
        return response.status, body


def ids(agent: LiveAgent) -> dict[str, str]:
    return {p["name"]: p["id"] for p in agent.session.pupils()}


async def test_give_take_release_and_the_microphone(
    agent: LiveAgent, speaking_viewers: list[tuple[str, bool]]
) -> None:
    whep = await agent.start()
    lea = await pupil_in(agent, whep, "Léa")
    tom = await pupil_in(agent, whep, "Tom")
    by_name = ids(agent)

    # The teacher gives Léa the floor: her page is told it is her, Tom's who speaks.
    status, body = await floor(agent, by_name["Léa"], True)
    assert status == 200 and body["class"]["floor"] == [by_name["Léa"]]
    assert [p["floor"] for p in body["pupils"]] == [True, False]
    assert speaking_viewers == [(by_name["Léa"], True)]
    await until(lambda: floor_of(lea) and floor_of(tom), 5, "told")
    assert floor_of(lea)[-1] == {"type": "floor", "you": True, "holders": ["Léa"]}
    assert floor_of(tom)[-1] == {"type": "floor", "you": False, "holders": ["Léa"]}

    # Her page opens its microphone and says so; the kiosk sees it.
    lea.channel.send(json.dumps({"type": "mic", "state": "on"}))
    await until(lambda: agent.session.pupils()[0]["mic"] == "on", 5, "mic on")

    # Floor max 1: a tap on Tom passes the floor; Léa's sound stops first.
    assert (await floor(agent, by_name["Tom"], True))[0] == 200
    assert speaking_viewers[1:] == [(by_name["Léa"], False), (by_name["Tom"], True)]
    await until(lambda: floor_of(lea)[-1]["you"] is False, 5, "passed")
    assert floor_of(lea)[-1]["holders"] == ["Tom"]
    assert agent.session.pupils()[0]["mic"] == "ready"

    # Tom's page has no microphone: the floor comes back at once, the kiosk shows why.
    tom.channel.send(json.dumps({"type": "mic", "state": "denied"}))
    await until(lambda: not agent.session.classroom.floor, 5, "taken back")  # type: ignore[union-attr]
    assert speaking_viewers[-1] == (by_name["Tom"], False)
    await until(lambda: floor_of(tom)[-1] == {"type": "floor", "you": False, "holders": []}, 5, "")
    assert agent.session.pupils()[1]["mic"] == "denied"

    # Léa again, then she presses stop on her page.
    await floor(agent, by_name["Léa"], True)
    lea.channel.send(json.dumps({"type": "floor_release"}))
    await until(lambda: speaking_viewers[-1] == (by_name["Léa"], False), 5, "released")
    # The teacher taking back what nobody holds is no error, and changes nothing.
    assert (await floor(agent, by_name["Léa"], False))[0] == 200
    assert speaking_viewers[-1] == (by_name["Léa"], False)

    turns = [e for e in agent.session.audit() if e["event"] == "spoke"]
    assert [(t["name"], t["ended_by"]) for t in turns] == [
        ("Léa", "passed"),
        ("Tom", "microphone"),
        ("Léa", "pupil"),
    ]
    assert all(t["seconds"] >= 0 and t["since"] > 0 for t in turns)


async def test_refusals_and_hostile_input(
    agent: LiveAgent, speaking_viewers: list[tuple[str, bool]]
) -> None:
    assert (await floor(agent, "nobody", True))[0] == 409  # idle
    whep = await agent.start()
    lea = await pupil_in(agent, whep, "Léa")
    lea_id = ids(agent)["Léa"]
    assert (await floor(agent, "nobody", True))[0] == 404
    assert (await floor(agent, "../../api/session/stop", True))[0] == 404
    for bad in ("yes", 1, None, [True], {"on": True}):
        assert (await floor(agent, lea_id, bad))[0] == 400, bad
    async with agent.http.post(
        f"{agent.base_url}/api/pupils/{lea_id}/floor", data=b"{" * 5000
    ) as response:
        assert response.status in (400, 413)
    # Only the kit itself: a page of another site pointing its name at 127.0.0.1 cannot.
    port = agent.base_url.rsplit(":", 1)[1]
    async with agent.http.post(
        f"{agent.base_url}/api/pupils/{lea_id}/floor",
        json={"floor": True},
        headers={"Host": f"evil.test:{port}", "Origin": f"http://evil.test:{port}"},
    ) as response:
        assert response.status == 403
    assert speaking_viewers == []

    # A page that floods "mic" and "floor_release" only meets its message budget; the
    # channel closes, the class goes on, the teacher can still give the floor.
    for _ in range(400):
        lea.channel.send('{"type":"floor_release"}')
        lea.channel.send('{"type":"mic","state":"on"}')
    await until(lambda: lea.channel.readyState == "closed", 10, "closed for flooding")
    assert (await floor(agent, lea_id, True))[0] == 200
    await agent.stop()
    assert speaking_viewers[-1] == (lea_id, False)  # Stop: nobody is heard any more


async def test_waiting_insecure_removed_and_left(
    agent: LiveAgent, speaking_viewers: list[tuple[str, bool]]
) -> None:
    agent.session.set_waiting_room(True)
    whep = await agent.start()
    lea = await pupil_in(agent, whep, "Léa")
    tom = await pupil_in(agent, whep, "Tom")
    by_name = ids(agent)
    status, text = await floor(agent, by_name["Léa"], True)
    assert status == 409 and "waiting room" in text
    # A waiting page may say what its microphone can do (not more); it learns no floor yet.
    tom.channel.send(json.dumps({"type": "mic", "state": "insecure"}))
    lea.channel.send(json.dumps({"type": "floor_release"}))
    await until(lambda: any(m["type"] == "error" for m in lea.messages), 5, "refused")
    await until(lambda: agent.session.pupils()[1]["mic"] == "insecure", 5, "insecure")
    assert not floor_of(tom)
    agent.session.admit_all()
    status, text = await floor(agent, by_name["Tom"], True)
    assert status == 409 and "cannot send sound" in text
    assert agent.session.pupils()[1]["can_speak"] is False

    # Removed with the floor: the sound stops, the others are told nobody speaks.
    await floor(agent, by_name["Léa"], True)
    await until(lambda: floor_of(tom) and floor_of(tom)[-1]["holders"] == ["Léa"], 5, "told")
    async with agent.http.post(f"{agent.base_url}/api/pupils/{by_name['Léa']}/remove") as r:
        assert r.status == 200
    assert speaking_viewers[-1] == (by_name["Léa"], False)
    await until(lambda: floor_of(tom)[-1]["holders"] == [], 5, "nobody speaks")

    # A new pupil gets the floor as it is when admitted; a holder who leaves ends the turn.
    agent.session.set_waiting_room(False)
    noe = await pupil_in(agent, whep, "Noé")
    await floor(agent, ids(agent)["Noé"], True)
    await until(lambda: floor_of(tom)[-1]["holders"] == ["Noé"], 5, "Noé speaks")
    await noe.close()
    await until(lambda: floor_of(tom)[-1]["holders"] == [], 10, "Noé left")
    ended = [e["ended_by"] for e in agent.session.audit() if e["event"] == "spoke"]
    assert ended == ["removed", "left"]


async def test_a_waiting_pupil_waits_a_bounded_time(
    agent: LiveAgent, monkeypatch: pytest.MonkeyPatch, speaking_viewers: list[tuple[str, bool]]
) -> None:
    monkeypatch.setattr("agent.session.WAITING_MAX_S", 1.0)
    agent.session.set_waiting_room(True)
    whep = await agent.start()
    pupil = await pupil_in(agent, whep, "Léa")
    admitted = await pupil_in(agent, whep, "Tom")
    agent.session.admit(ids(agent)["Tom"])
    await until(lambda: {"type": "lobby_timeout"} in pupil.messages, 5, "told")
    await until(lambda: [p["name"] for p in agent.session.pupils()] == ["Tom"], 5, "closed")
    assert {"type": "lobby_timeout"} not in admitted.messages
