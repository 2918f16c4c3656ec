"""A Firefox pupil (Debian's firefox-esr, headless, on the real pupil page; tests/firefox.py)
through issue 17's flows: the waiting room, a written question, and the floor, with Firefox's
fake microphone (``media.navigator.streams.fake``, a 1 kHz tone) heard on the kit's speaker;
and, from a network namespace, the kit's plain-http LAN address, where no page can speak."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.agentproc import AgentProcess, lan_kit_config
from tests.conftest import AgentFactory, until
from tests.firefox import FIREFOX_MARKS, firefox_pupil
from tests.kiosk.test_floor_in_browsers import SpeakerTap, tap_speaker, tone_level
from tests.netns import pupil_link

pytestmark = FIREFOX_MARKS

FAKE_MIC = {"media.navigator.streams.fake": True}
FAKE_TONE_HZ = 1000.0
"""What Firefox's fake microphone plays (measured on the kit's speaker: −24 dBFS, 1 kHz)."""

PAGE = """(() => ({
  state: document.body.dataset.state,
  direction: session ? session.pc.getTransceivers()[2].currentDirection : null,
  mic: micTrack ? micTrack.readyState : null,
  sender: session && session.audioSender && session.audioSender.track ? "track" : null,
  floor: document.getElementById("floor").hidden ? null
    : document.getElementById("floor-text").textContent,
  question: document.getElementById("question-status").textContent,
}))()"""


async def page_until(pupil: Any, check: Any, what: str, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = dict(await pupil.evaluate(PAGE))
        if check(state):
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: {state}")


async def test_waiting_room_question_and_floor_in_firefox(make_agent: AgentFactory) -> None:
    agent = await make_agent(speaker={"device": "null"}, kiosk={"waiting_room": True})
    await agent.start()
    tap = SpeakerTap()
    tap_speaker(agent, tap)
    url = agent.session.join_url
    assert url is not None
    async with firefox_pupil(url, prefs=FAKE_MIC) as firefox:
        await page_until(firefox, lambda s: s["state"] == "lobby", "in the waiting room")
        await firefox.evaluate(
            "(() => { document.getElementById('name').value = 'Zoé';"
            " document.getElementById('name-form').requestSubmit(); return true; })()"
        )
        await until(lambda: [p["name"] for p in agent.session.pupils()] == ["Zoé"], 10, "name")
        (pupil,) = agent.session.pupils()
        assert pupil["admitted"] is False and pupil["mic"] == "ready"
        agent.session.admit(pupil["id"])
        await firefox.stats_until(lambda s: s["state"] == "connected" and s["tracks"])
        state = await page_until(firefox, lambda s: s["state"] == "live", "let in")
        assert state["direction"] == "sendrecv" and state["mic"] is None

        # A written question, answered on the kiosk's API; the page says so.
        await firefox.evaluate(
            "(() => { document.getElementById('question').value = 'Pourquoi ?';"
            " document.getElementById('question-form').requestSubmit(); return true; })()"
        )
        await until(lambda: agent.session.class_status()["questions"], 10, "question")
        (question,) = agent.session.class_status()["questions"]
        assert question["text"] == "Pourquoi ?" and question["name"] == "Zoé"
        agent.session.mark_question(question["id"], "answered")
        await page_until(firefox, lambda s: "répondu" in s["question"], "answered")

        # The floor: Firefox opens its (fake) microphone only now; the kit's speaker hears it.
        agent.session.give_floor(pupil["id"])
        state = await page_until(firefox, lambda s: s["mic"] == "live", "Firefox on air")
        assert state["sender"] == "track" and "t'entend" in (state["floor"] or "")
        await until(lambda: agent.session.pupils()[0]["mic"] == "on", 10, "the kiosk knows")
        heard_from = time.monotonic()
        await until(lambda: tone_level(tap.since(heard_from))[0] > -40, 15, "sound on the speaker")
        await asyncio.sleep(1.0)
        level, peak = tone_level(tap.since(time.monotonic() - 0.8))
        assert level > -40 and abs(peak - FAKE_TONE_HZ) < 15, (level, peak)
        agent.session.take_floor(pupil["id"])
        # The track is stopped at once; replaceTrack(null) settles a moment later.
        await page_until(
            firefox,
            lambda s: s["mic"] is None and s["floor"] is None and s["sender"] is None,
            "off",
        )
        quiet_from = time.monotonic() + 0.3
        await until(lambda: time.monotonic() > quiet_from + 1.0, 3, "a second of silence")
        assert tone_level(tap.since(quiet_from))[0] < -80

        await agent.stop()
        await page_until(firefox, lambda s: s["state"] == "ended", "ended")


async def test_a_lan_page_over_http_cannot_speak(tmp_path: Path) -> None:
    """docs/talkback.md "Secure context", on a real school LAN address: the kit's agent process
    serves the class on ``http://10.x.y.1``, Firefox runs in its own network namespace
    (``10.x.y.2``) and opens the join link there. Not a secure context: no media API; the page
    offers receive-only sound and says ``insecure``; the kit says the pupil cannot speak and
    refuses it the floor; the class works otherwise (pictures, hand)."""
    with pupil_link(None) as link:
        config, port = lan_kit_config(tmp_path, link.kit_address)
        config.write_text(config.read_text() + '\n[speaker]\ndevice = "null"\n')
        kit = AgentProcess(config, tmp_path / "agent.log", f"http://127.0.0.1:{port}")
        await kit.start()
        try:
            status = await kit.api("POST", "/api/session/start")
            join_url = status["session"]["join_url"]
            assert join_url.startswith(f"http://{link.kit_address}:{port}/join/"), join_url
            prefix = ("ip", "netns", "exec", link.namespace)
            async with firefox_pupil(
                join_url, link.pupil_address, prefix, home=tmp_path, prefs=FAKE_MIC
            ) as firefox:
                await firefox.stats_until(lambda s: s["state"] == "connected" and s["tracks"])
                assert await firefox.evaluate("window.isSecureContext") is False
                assert await firefox.evaluate("navigator.mediaDevices === undefined")
                state = await page_until(firefox, lambda s: s["state"] == "live", "in")
                assert state["direction"] == "recvonly" and state["mic"] is None

                async def pupils() -> list[dict[str, Any]]:
                    return list((await kit.api("GET", "/api/status"))["pupils"])

                deadline = time.monotonic() + 10
                while (await pupils())[0]["mic"] != "insecure":
                    assert time.monotonic() < deadline, await pupils()
                    await asyncio.sleep(0.2)
                (pupil,) = await pupils()
                assert pupil["can_speak"] is False and pupil["floor"] is False
                async with (
                    aiohttp.ClientSession() as http,
                    http.post(
                        f"{kit.base_url}/api/pupils/{pupil['id']}/floor", json={"floor": True}
                    ) as response,
                ):
                    assert response.status == 409
                await firefox.evaluate("(() => { document.getElementById('hand').click(); })()")
                deadline = time.monotonic() + 10
                while not (await pupils())[0]["hand_raised_at"]:
                    assert time.monotonic() < deadline, "the hand did not reach the kit"
                    await asyncio.sleep(0.2)
                assert (await page_until(firefox, lambda s: True, "page"))["floor"] is None
        finally:
            await kit.close()
