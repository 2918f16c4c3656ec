"""The teacher gives a remote pupil the floor (issue 17, docs/talkback.md "The floor"): the kiosk
and two pupils' pages in real Chromium, driven only by touch and their buttons.

Chromium runs with a fake microphone that plays a known tone (a WAV file made here), and every
page's ``navigator.mediaDevices.getUserMedia`` is wrapped by an init script that records each
call: the page must never ask before the kit gives it the floor, then ask for sound only. The
kit plays the voices on its speaker, device ``null`` here (paced, played nowhere), whose every
block is tapped: the tone must be there while the pupil has the floor, and silence after.
"""

from __future__ import annotations

import math
import threading
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.browser import CHROMIUM, CHROMIUM_ARGS
from tests.chromium import BROWSER_MARKS, open_kiosk, open_pupil_page, screenshot, stats_until
from tests.conftest import AgentFactory, LiveAgent, until
from tests.kiosk.test_class_in_browsers import PHONE, frames, text_of

pytestmark = BROWSER_MARKS

TONE_HZ = 660.0
RATE = 48_000

RECORD_GUM_JS = """
window.__gum = [];
(() => {
  const devices = navigator.mediaDevices;
  if (!devices || !devices.getUserMedia) return;  // not a secure context: nothing to wrap
  const original = devices.getUserMedia.bind(devices);
  devices.getUserMedia = (constraints) => {
    window.__gum.push(JSON.parse(JSON.stringify(constraints === undefined ? null : constraints)));
    if (window.__denyMic) return Promise.reject(new DOMException("denied", "NotAllowedError"));
    return original(constraints);
  };
})();
"""
DENY_MIC_JS = "window.__denyMic = true;\n" + RECORD_GUM_JS

MIC_JS = """() => {
  const sender = session && session.audioSender;
  const track = sender && sender.track;
  const shown = (id) => (document.getElementById(id).hidden ? null
    : document.getElementById(id === "floor" ? "floor-text" : id).textContent);
  return {gum: window.__gum, sending: track ? track.readyState : null,
          direction: session && session.pc.getTransceivers()[2].currentDirection,
          kind: track ? track.kind : null, floor: shown("floor"),
          you: document.getElementById("floor").dataset.you, problem: shown("mic-problem")};
}"""


def tone_wav(path: Path, seconds: float = 20.0) -> Path:
    """A 660 Hz tone at -6 dBFS, 48 kHz mono 16-bit (Chromium loops it)."""
    t = np.arange(int(RATE * seconds)) / RATE
    samples = (0.5 * 32767 * np.sin(2 * math.pi * TONE_HZ * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.tobytes())
    return path


@pytest.fixture
async def talk_browser(loopback_checks_only: None, tmp_path: Path) -> AsyncIterator[Any]:
    """Chromium whose microphone is the tone file (and whose permission prompt says yes)."""
    playwright = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    wav = tone_wav(tmp_path / "tone.wav")
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    ]
    async with playwright.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield chromium
        finally:
            await chromium.close()


class SpeakerTap:
    """Every block the kit's speaker writes, with the time it was written (speaker thread)."""

    def __init__(self) -> None:
        self.blocks: list[tuple[float, np.ndarray]] = []
        self._lock = threading.Lock()

    def __call__(self, block: np.ndarray, at: float) -> None:
        with self._lock:
            self.blocks.append((time.monotonic(), block.copy()))

    def since(self, start: float, end: float | None = None) -> np.ndarray:
        with self._lock:
            chosen = [b for t, b in self.blocks if t >= start and (end is None or t < end)]
        return np.concatenate(chosen).astype(np.float64) if chosen else np.zeros(0)


def tone_level(samples: np.ndarray) -> tuple[float, float]:
    """(RMS in dBFS, the strongest frequency in Hz) of int16-scaled samples."""
    if samples.size < RATE // 10:
        return -120.0, 0.0
    rms = float(np.sqrt(np.mean(samples**2))) / 32768
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    peak = float(np.fft.rfftfreq(samples.size, 1 / RATE)[int(np.argmax(spectrum))])
    return 20 * math.log10(max(rms, 1e-6)), peak


async def start_by_touch(kiosk: Any) -> None:
    await kiosk.wait_for_selector("body[data-view=idle]")
    await kiosk.locator("#start").tap()
    await kiosk.wait_for_selector("body[data-view=live]", timeout=20_000)


async def pupil(browser: Any, url: str, name: str, init: str = RECORD_GUM_JS, **kw: Any) -> Any:
    page = await open_pupil_page(browser, url, init_script=init, **kw)
    await page.fill("#name", name)
    await page.click("#name-save")
    await stats_until(page, lambda s: s["state"] == "connected" and frames(s)["camera"] > 3)
    return page


async def mic(page: Any) -> dict[str, Any]:
    return dict(await page.evaluate(MIC_JS))


async def mic_until(page: Any, check: Any, what: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = await mic(page)
        if check(state):
            return state
        await page.wait_for_timeout(100)
    raise AssertionError(f"{what}: {state}")


async def floor_by_touch(
    agent: LiveAgent, kiosk: Any, tap: SpeakerTap, url: str, tmp: Path
) -> None:
    """The whole turn, as a teacher and two pupils do it; shared by the LAN and relay tests."""
    tom = await pupil(kiosk.context.browser, url, "Tom")
    lea = await pupil(kiosk.context.browser, url, "Léa", viewport=PHONE)
    for page in (tom, lea):  # sendrecv from the start, and no microphone asked for
        state = await mic(page)
        assert state["gum"] == [] and state["direction"] == "sendrecv", state
        assert state["sending"] is None and state["floor"] is None
    # The pages say what their microphone can do over the data channel, once it is open: the
    # kit may learn it a moment after the page shows pictures. (Before whep.js kept a channel's
    # early messages, this failed in about half the runs: the page missed its channel's "open".)
    try:
        await until(
            lambda: all(p["can_speak"] and p["mic"] == "ready" for p in agent.session.pupils()),
            10,
            "both pupils can speak",
        )
    except AssertionError as exc:
        seen = [(p["name"], p["can_speak"], p["mic"]) for p in agent.session.pupils()]
        raise AssertionError(f"{exc}; the kit sees {seen}") from None

    # Tom raises his hand; one tap beside it gives him the floor.
    await tom.click("#hand")
    row = kiosk.locator("#pupils li.hand", has_text="Tom")
    await row.wait_for(timeout=5_000)
    assert await row.locator("button.give-floor").get_attribute("aria-label") == (
        "Donner la parole : Tom"
    )
    await row.locator("button.give-floor").tap()
    state = await mic_until(tom, lambda s: s["sending"] == "live", "Tom's microphone on air")
    assert state["gum"] == [{"audio": True, "video": False}]  # sound only, asked once, now
    assert state["kind"] == "audio" and state["you"] == "true"
    await tom.wait_for_function(
        "document.getElementById('floor-text').textContent.includes(\"la classe t'entend\")"
    )
    assert await tom.locator("#hand").get_attribute("aria-pressed") == "false"  # hand down
    # Every other page shows who speaks; it has asked for nothing.
    state = await mic_until(lea, lambda s: s["floor"] == "Tom a la parole", "Léa sees it")
    assert state["gum"] == [] and state["you"] == "false"
    # The kiosk: an unmistakable banner, and the class hears him.
    await kiosk.wait_for_selector("#floor:not([hidden])", timeout=5_000)
    assert await text_of(kiosk, "#floor-title") == "Tom a la parole"
    await kiosk.wait_for_selector("#floor-list .mic[data-mic=on]", timeout=5_000)
    assert await text_of(kiosk, "#floor-list .mic") == "la classe l'entend"
    assert await kiosk.locator("#pupils li.has-floor", has_text="Tom").count() == 1

    # The tone reaches the kit's speaker, with energy.
    heard_from = time.monotonic()
    await until(lambda: tone_level(tap.since(heard_from))[0] > -30, 10, "the tone on the speaker")
    await kiosk.wait_for_timeout(1000)
    level, peak = tone_level(tap.since(time.monotonic() - 0.8))
    assert level > -30 and abs(peak - TONE_HZ) < 15, (level, peak)
    await screenshot(kiosk, "kiosk-floor.png", tmp)
    await screenshot(tom, "pupil-floor-you.png", tmp)
    await screenshot(lea, "pupil-floor-other.png", tmp)

    # One tap on the banner takes it back: his track is stopped, the speaker goes silent.
    await kiosk.locator("#floor-list button.take-floor").tap()
    state = await mic_until(tom, lambda s: s["sending"] is None and s["floor"] is None, "closed")
    assert await tom.evaluate("micTrack === null")
    await lea.wait_for_selector("#floor", state="hidden", timeout=5_000)
    await kiosk.wait_for_selector("#floor", state="hidden", timeout=5_000)
    quiet_from = time.monotonic() + 0.3  # what was queued in the speaker's jitter buffer
    await kiosk.wait_for_timeout(1300)
    level, _ = tone_level(tap.since(quiet_from))
    assert level < -80, level
    assert (await mic(tom))["gum"] == [{"audio": True, "video": False}]  # not asked again

    # Léa gets it from the pupil list, and gives it back with her own stop button.
    await kiosk.locator("#pupils li", has_text="Léa").locator("button.give-floor").tap()
    await mic_until(lea, lambda s: s["sending"] == "live", "Léa on air")
    await mic_until(tom, lambda s: s["floor"] == "Léa a la parole", "Tom sees it")
    await lea.click("#floor-stop")
    await mic_until(lea, lambda s: s["sending"] is None and s["floor"] is None, "released")
    await kiosk.wait_for_selector("#floor", state="hidden", timeout=5_000)
    turns = [(e["name"], e["ended_by"]) for e in agent.session.audit() if e["event"] == "spoke"]
    assert turns == [("Tom", "teacher"), ("Léa", "pupil")]
    for page in (tom, lea):
        await page.context.close()


@pytest.fixture
async def talk_agent(make_agent: AgentFactory) -> AsyncIterator[tuple[LiveAgent, SpeakerTap]]:
    agent = await make_agent(speaker={"device": "null"})
    yield agent, SpeakerTap()


def tap_speaker(agent: LiveAgent, tap: SpeakerTap) -> None:
    pipeline = agent.session.pipeline
    assert pipeline is not None and pipeline.talkback is not None
    pipeline.talkback.speaker.tap = tap


async def test_floor_by_touch_on_the_lan(
    talk_agent: tuple[LiveAgent, SpeakerTap], talk_browser: Any, tmp_path: Path
) -> None:
    agent, tap = talk_agent
    kiosk = await open_kiosk(talk_browser, agent.base_url)
    await start_by_touch(kiosk)
    tap_speaker(agent, tap)
    assert agent.session.join_url is not None
    await floor_by_touch(agent, kiosk, tap, agent.session.join_url, tmp_path)
    await kiosk.context.close()


async def test_a_refused_microphone_is_said_on_the_page_and_the_kiosk(
    talk_agent: tuple[LiveAgent, SpeakerTap], talk_browser: Any
) -> None:
    agent, _ = talk_agent
    kiosk = await open_kiosk(talk_browser, agent.base_url)
    await start_by_touch(kiosk)
    await kiosk.locator("#lang").tap()  # the teacher reads English
    assert agent.session.join_url is not None
    page = await pupil(talk_browser, agent.session.join_url, "Noé", init=DENY_MIC_JS)
    await kiosk.locator("#pupils li", has_text="Noé").locator("button.give-floor").tap()
    state = await mic_until(page, lambda s: s["problem"], "told")
    assert "bloqué" in state["problem"] and state["sending"] is None
    # The kit took the floor back at once; the kiosk says why, the floor can be given again.
    await kiosk.wait_for_selector("#pupils li .nomic[data-mic=denied]", timeout=5_000)
    assert await text_of(kiosk, "#pupils li .nomic") == "microphone refused on their page"
    assert await kiosk.locator("#floor").is_hidden()
    assert [e["ended_by"] for e in agent.session.audit() if e["event"] == "spoke"] == ["microphone"]
    await page.context.close()
    await kiosk.context.close()


@pytest.fixture
async def lan_name_browser(loopback_checks_only: None, tmp_path: Path) -> AsyncIterator[Any]:
    """Chromium that reaches the kit by a school-LAN name over plain http (``kit.school.test``,
    resolved to the kit's 127.0.0.1 by Chromium's own resolver): whether a page is a secure
    context depends on its URL's host only, and this one is neither https nor loopback."""
    playwright = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
    wav = tone_wav(tmp_path / "tone.wav")
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
        "--host-resolver-rules=MAP kit.school.test 127.0.0.1",
    ]
    async with playwright.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield chromium
        finally:
            await chromium.close()


async def test_a_page_over_plain_http_on_the_lan_cannot_speak(
    talk_agent: tuple[LiveAgent, SpeakerTap], lan_name_browser: Any
) -> None:
    """docs/talkback.md "Secure context": the page says it cannot have a microphone, offers
    receive-only sound, and the kiosk shows why instead of a "give the floor" button; the kit
    refuses the floor to it. The same page on the kit's loopback address (the other tests) or
    through the server's https link can speak."""
    agent, _ = talk_agent
    kiosk = await open_kiosk(lan_name_browser, agent.base_url)
    await start_by_touch(kiosk)
    url = agent.session.join_url
    assert url is not None and url.startswith("http://127.0.0.1:")
    lan_url = url.replace("http://127.0.0.1:", "http://kit.school.test:")
    page = await pupil(lan_name_browser, lan_url, "Inès")
    assert await page.evaluate("window.isSecureContext") is False
    assert await page.evaluate("navigator.mediaDevices === undefined")
    state = await mic(page)
    assert state["direction"] == "recvonly" and state["gum"] == []
    await until(lambda: agent.session.pupils()[0]["mic"] == "insecure", 5, "the kit is told")
    (entry,) = agent.session.pupils()
    assert entry["can_speak"] is False
    (viewer,) = agent.session.viewers.values()
    assert viewer.can_speak is False  # its offer cannot send: nothing to hear, whatever it does

    row = kiosk.locator("#pupils li", has_text="Inès")
    await row.locator(".nomic[data-mic=insecure]").wait_for(timeout=5_000)
    assert "http" in await text_of(kiosk, "#pupils li .nomic")
    assert await row.locator("button.give-floor").count() == 0
    async with agent.http.post(
        f"{agent.base_url}/api/pupils/{entry['id']}/floor", json={"floor": True}
    ) as response:
        assert response.status == 409
    await page.click("#hand")  # the rest of the class works as before
    await until(lambda: agent.session.pupils()[0]["hand_raised_at"], 5, "hand")
    assert (await mic(page))["floor"] is None
    await page.context.close()
    await kiosk.context.close()


async def test_floor_screens_pass_axe(
    talk_agent: tuple[LiveAgent, SpeakerTap], talk_browser: Any
) -> None:
    """WCAG 2.1 A/AA (tests/kiosk/test_accessibility.py) on the screens of the floor: the
    kiosk's banner and rows, the speaking pupil's page, another pupil's (English), a refused
    microphone; and the keyboard alone gives and takes back the floor."""
    from tests.kiosk.test_accessibility import violations

    agent, _ = talk_agent
    kiosk = await open_kiosk(talk_browser, agent.base_url)
    await start_by_touch(kiosk)
    url = agent.session.join_url
    assert url is not None
    tom = await pupil(talk_browser, url, "Tom", viewport=PHONE)
    other = await pupil(talk_browser, url, "Ann", locale="en-GB")
    denied = await pupil(talk_browser, url, "Noé", init=DENY_MIC_JS)
    await kiosk.wait_for_selector("#pupils li:has-text('Noé') button.give-floor")
    assert await violations(kiosk) == []

    # Keyboard: focus Tom's "give the floor" button and press Enter.
    await kiosk.locator("#pupils li", has_text="Tom").locator("button.give-floor").focus()
    await kiosk.keyboard.press("Enter")
    await mic_until(tom, lambda s: s["sending"] == "live", "Tom on air")
    await mic_until(other, lambda s: s["floor"] == "Tom has the floor", "in English")
    await kiosk.wait_for_selector("#floor-list .mic[data-mic=on]", timeout=5_000)
    assert await violations(kiosk) == []
    assert await violations(tom) == []
    assert await violations(other) == []
    await kiosk.locator("#floor-list button.take-floor").focus()
    await kiosk.keyboard.press("Enter")
    await mic_until(tom, lambda s: s["sending"] is None, "taken back by keyboard")

    await kiosk.locator("#pupils li", has_text="Noé").locator("button.give-floor").tap()
    await mic_until(denied, lambda s: s["problem"], "refused")
    await kiosk.wait_for_selector("#pupils li .nomic[data-mic=denied]", timeout=5_000)
    assert await violations(denied) == []
    assert await violations(kiosk) == []
    for page in (tom, other, denied, kiosk):
        await page.context.close()


async def test_a_missing_speaker_is_said_on_the_kiosk(
    make_agent: AgentFactory, talk_browser: Any
) -> None:
    """The floor given while the room's speaker is missing: the kiosk says so in plain words
    (``speaker_unavailable``, agent/problems.py), the class goes on, and the sentence goes when
    the floor is taken back."""
    agent = await make_agent(speaker={"device": "no-such-speaker"})
    kiosk = await open_kiosk(talk_browser, agent.base_url)
    await start_by_touch(kiosk)
    assert agent.session.join_url is not None
    page = await pupil(talk_browser, agent.session.join_url, "Tom")
    await kiosk.locator("#pupils li", has_text="Tom").locator("button.give-floor").tap()
    await mic_until(page, lambda s: s["sending"] == "live", "Tom on air")
    problem = kiosk.locator("#problems .problem", has_text="haut-parleur")
    await problem.wait_for(timeout=10_000)
    assert "la classe n'entend pas l'élève qui a la parole" in await problem.inner_text()
    await kiosk.locator("#floor-list button.take-floor").tap()
    await problem.wait_for(state="detached", timeout=10_000)
    await page.context.close()
    await kiosk.context.close()
