"""The kiosk's "who is in" and questions API (docs/kiosk.md), and the WHEP refusals it makes
(docs/whep.md: ``locked``, ``removed``)."""

from __future__ import annotations

from typing import Any

from tests.conftest import LiveAgent, chrome_offer_on_loopback

KEY = "k" * 22


async def call(agent: LiveAgent, path: str, body: Any = None) -> tuple[int, Any]:
    async with agent.http.post(agent.base_url + path, json=body) as response:
        text = await response.text()
        return response.status, (await response.json()) if response.status == 200 else text


async def offer(agent: LiveAgent, key: str | None) -> tuple[int, str | None]:
    token = agent.session.token
    headers = {"Content-Type": "application/sdp"}
    if key is not None:
        headers["X-Pupil-Key"] = key
    async with agent.http.post(
        f"{agent.base_url}/whep/{token}", data=chrome_offer_on_loopback(), headers=headers
    ) as response:
        return response.status, response.headers.get("X-Class-State")


async def test_refusals_of_the_controls(agent: LiveAgent) -> None:
    # Idle: the waiting room is chosen for the next class; nothing else is possible.
    status, body = await call(agent, "/api/class/waiting-room", {"enabled": True})
    assert status == 200 and body["class"]["waiting_room"] is True
    for path in ("/api/class/lock", "/api/pupils/x/admit", "/api/pupils/admit-all"):
        assert (await call(agent, path, {"locked": True}))[0] == 409
    await agent.start()
    assert agent.session.classroom is not None and agent.session.classroom.waiting_room
    assert (await call(agent, "/api/pupils/nobody/admit"))[0] == 404
    assert (await call(agent, "/api/pupils/nobody/remove"))[0] == 404
    assert (await call(agent, "/api/class/lock", {"locked": "yes"}))[0] == 400
    assert (await call(agent, "/api/class/waiting-room", {}))[0] == 400
    assert (await call(agent, "/api/questions/q1", {"state": "answered"}))[0] == 404
    assert (await call(agent, "/api/questions/show", {"id": 3}))[0] == 400
    assert (await call(agent, "/api/questions/show", {"id": "q9"}))[0] == 404
    assert (await call(agent, "/api/questions/show", {"id": None}))[0] == 200
    async with agent.http.get(agent.base_url + "/api/audit") as response:
        assert response.status == 200 and (await response.json()) == {"events": []}


async def test_lock_and_removal_refuse_offers(agent: LiveAgent) -> None:
    await agent.start()
    status, _ = await offer(agent, KEY)
    assert status == 201
    (viewer,) = agent.session.viewers.values()
    assert viewer.key == KEY and viewer.admitted  # no waiting room: in at once

    status, body = await call(agent, "/api/class/lock", {"locked": True})
    assert status == 200 and body["class"]["locked"] is True
    assert await offer(agent, "n" * 22) == (403, "locked")
    assert await offer(agent, None) == (403, "locked")
    assert (await offer(agent, KEY))[0] == 201  # in before the lock: may come back

    await call(agent, "/api/class/lock", {"locked": False})
    status, _ = await call(agent, f"/api/pupils/{viewer.id}/remove")
    assert status == 200 and viewer.id not in agent.session.viewers
    assert await offer(agent, KEY) == (403, "removed")
    assert (await offer(agent, "bad key!"))[0] == 201  # a malformed key is no key
    events = [e["event"] for e in agent.session.audit()]
    assert events.count("refused") == 3 and "removed" in events

    await agent.stop()
    await agent.start()  # a new class: nobody is removed any more
    assert (await offer(agent, KEY))[0] == 201
